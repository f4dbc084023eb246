# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""AWX's side of a job, for the tests that run the playbooks with ansible-runner as AWX does.

* ``credential_type(name)`` loads a credential type of ``extensions/awx/credential_types/``;
  ``inject(ctype, inputs, private_data_dir)`` renders its injectors the way AWX renders custom
  credential types: Jinja2 (sandboxed) over the inputs, each ``file`` template written to a 0600
  file under ``<private data dir>/env/`` whose path is ``tower.filename.<name>``, the ``env``
  templates rendered into variables of the job's environment. ``extra_vars`` injectors are refused
  (their values are shown with the job), and so are variables that AWX does not let credentials set.
* ``PrivateDataDir`` lays out the directory AWX hands to ansible-runner: ``project/`` (the
  playbooks of ``extensions/awx/project/``), ``inventory/hosts`` (an executable script printing
  the inventory as JSON, as AWX writes it), ``env/extravars`` (the template's extra variables and
  the survey's answers), ``env/envvars``, ``env/settings``, ``env/passwords`` and ``env/ssh_key``.
* ``Job`` is one ``ansible-runner run <dir> -p <playbook> --ident <id>``: its status, rc, stdout
  and job events, read from ``artifacts/<id>/``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import yaml
from jinja2.sandbox import SandboxedEnvironment

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
AWX = ROOT / 'extensions' / 'awx'
CREDENTIAL_TYPES = AWX / 'credential_types'
DOC = ROOT / 'docs' / 'awx.md'

# Variables AWX does not let a credential type set (awx.main.constants.ENV_BLOCKLIST), and its rule
# that ANSIBLE_* variables may change Ansible's configuration and are refused as well.
ENV_BLOCKLIST = frozenset((
    'VIRTUAL_ENV', 'PATH', 'PYTHONPATH', 'JOB_ID', 'INVENTORY_ID', 'INVENTORY_SOURCE_ID', 'INVENTORY_UPDATE_ID',
    'AD_HOC_COMMAND_ID', 'REST_API_URL', 'REST_API_TOKEN', 'MAX_EVENT_RES', 'CALLBACK_QUEUE', 'CALLBACK_CONNECTION',
    'CACHE', 'JOB_CALLBACK_DEBUG', 'INVENTORY_HOSTVARS', 'AWX_HOST', 'PROJECT_REVISION', 'SUPERVISOR_CONFIG_PATH',
))
# The prompts AWX answers through env/passwords (no Machine password or become password here).
PASSWORD_PROMPTS = {
    r'Enter passphrase for .*:\s*?$': '',
    r'Bad passphrase, try again for .*:\s*?$': '',
    r'SSH password:\s*?$': '',
    r'BECOME password.*:\s*?$': '',
    r'Vault password:\s*?$': '',
}


def load_yaml(path):
    with open(str(path), encoding='utf-8') as handle:
        return yaml.safe_load(handle)


def credential_type(name):
    """The credential type of extensions/awx/credential_types/<name>.yml."""
    return load_yaml(CREDENTIAL_TYPES / ('%s.yml' % name))


def credential_types():
    return dict((path.stem, load_yaml(path)) for path in sorted(CREDENTIAL_TYPES.glob('*.yml')))


def job_template(name):
    return next(t for t in load_yaml(AWX / 'job_templates.yml') if t['name'] == name)


def survey_defaults(template):
    """The answers of a scheduled launch: each survey question's default."""
    if not template.get('survey_enabled'):
        return {}
    spec = json.loads((AWX / template['survey_spec']).read_text(encoding='utf-8'))
    return dict((q['variable'], q['default']) for q in spec['spec'] if 'default' in q)


def check_credential_type(ctype):
    """Problems of a credential type as AWX would import it, plus this collection's rule: secrets only as
    files or environment, never extra variables."""
    problems = []
    fields = ctype['inputs']['fields']
    ids = [f['id'] for f in fields]
    for name in ctype['inputs'].get('required', []):
        if name not in ids:
            problems.append('required %s is not a field' % name)
    injectors = ctype['injectors']
    for key in injectors:
        if key not in ('env', 'file'):
            problems.append('injector %s: only env and file injectors are allowed' % key)
    for name in injectors.get('env', {}):
        if name in ENV_BLOCKLIST or name.startswith('ANSIBLE_'):
            problems.append('env %s: AWX refuses this variable in a credential type' % name)
        if not re.match(r'^[A-Za-z_][A-Za-z0-9_]*$', name):
            problems.append('env %s: not a variable name' % name)
    for name in injectors.get('file', {}):
        if not re.match(r'^template(\.[A-Za-z0-9_]+)?$', name):
            problems.append('file %s: AWX file injectors are template or template.<name>' % name)
    used = ' '.join(str(v) for kind in injectors.values() for v in kind.values())
    for field in fields:
        if not re.search(r'\{\{\s*%s\b' % re.escape(field['id']), used):
            problems.append('field %s is not injected' % field['id'])
    return problems


def inject(ctype, inputs, private_data_dir):
    """(env, files) of one credential of ``ctype`` with ``inputs``, rendered as AWX renders custom credential
    types; the files are written 0600 under <private data dir>/env/."""
    problems = check_credential_type(ctype)
    if problems:
        raise AssertionError('%s: %s' % (ctype['name'], '; '.join(problems)))
    jinja = SandboxedEnvironment(keep_trailing_newline=True)
    namespace = dict((f['id'], '') for f in ctype['inputs']['fields'])
    namespace.update(inputs)
    filenames = {}
    files = []
    env_dir = Path(private_data_dir) / 'env'
    env_dir.mkdir(mode=0o700, exist_ok=True)
    for name, template in ctype['injectors'].get('file', {}).items():
        fd, path = tempfile.mkstemp(dir=str(env_dir))
        with os.fdopen(fd, 'w', encoding='utf-8') as handle:
            handle.write(jinja.from_string(template).render(**namespace))
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
        filenames[name.partition('.')[2] or 'template'] = path
        files.append(Path(path))
    tower = {'filename': filenames.get('template') if list(filenames) == ['template'] else _Names(filenames)}
    env = {}
    for name, template in ctype['injectors'].get('env', {}).items():
        env[name] = jinja.from_string(template).render(tower=tower, **namespace)
    return env, files


class _Names(dict):
    def __getattr__(self, name):
        return self[name]


def inventory_script(inventory):
    """An AWX inventory script (inventory/hosts): prints the inventory JSON ({group: {hosts, vars,
    children}, _meta: {hostvars}})."""
    return '#! /usr/bin/env python3\n# -*- coding: utf-8 -*-\nprint(%r)\n' % json.dumps(inventory, indent=2)


class PrivateDataDir(object):
    """The private data directory of one AWX job."""

    def __init__(self, parent, template, inventory, credentials, ssh_key=None, envvars=None, extra_vars=None):
        """``credentials``: [(credential type name, inputs)]; ``inventory``: the JSON inventory."""
        self.path = Path(tempfile.mkdtemp(prefix='awx_', dir=str(parent)))
        self.template = template
        project = self.path / 'project'
        project.mkdir()
        for source in (AWX / 'project').glob('*.yml'):
            shutil.copyfile(str(source), str(project / source.name))
        (self.path / 'inventory').mkdir()
        hosts = self.path / 'inventory' / 'hosts'
        hosts.write_text(inventory_script(inventory), encoding='utf-8')
        hosts.chmod(0o700)
        self.injected_files = []
        env = {'JOB_ID': '1', 'INVENTORY_ID': '1', 'ANSIBLE_HOST_KEY_CHECKING': 'False', 'ANSIBLE_RETRY_FILES_ENABLED': 'False'}
        for type_name, inputs in credentials:
            values, files = inject(credential_type(type_name), inputs, self.path)
            env.update(values)
            self.injected_files.extend(files)
        env.update(envvars or {})
        variables = dict(template.get('extra_vars') or {})
        variables.update(survey_defaults(template))
        variables.update(extra_vars or {})
        self.extra_vars = variables
        self._write('env/extravars', json.dumps(variables))
        self._write('env/envvars', json.dumps(env))
        settings = {'job_timeout': template.get('timeout', 0), 'idle_timeout': 0, 'pexpect_timeout': 5,
                    'suppress_ansible_output': False}
        self._write('env/settings', json.dumps(settings))
        self._write('env/passwords', json.dumps(PASSWORD_PROMPTS))
        if ssh_key:
            self._write('env/ssh_key', ssh_key)

    def _write(self, name, text):
        path = self.path / name
        fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, 'w', encoding='utf-8') as handle:
            handle.write(text)

    def run(self, runner, env, ident, timeout=900):
        """``ansible-runner run <dir> -p <the template's playbook> --ident <ident>`` -> Job."""
        argv = [str(runner), 'run', str(self.path), '-p', self.template['playbook'], '--ident', ident]
        proc = subprocess.run(argv, env=env, capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout, check=False)
        return Job(self, ident, proc)


class Job(object):
    def __init__(self, private_data_dir, ident, proc):
        self.private_data_dir = private_data_dir
        self.dir = private_data_dir.path / 'artifacts' / ident
        self.proc = proc
        self.status = self._read('status')
        rc = self._read('rc')
        self.rc = int(rc) if rc not in (None, '') else None
        self.stdout = self._read('stdout') or ''
        self.events = []
        events = self.dir / 'job_events'
        if events.is_dir():
            found = [json.loads(p.read_text(encoding='utf-8')) for p in events.glob('*.json')]
            self.events = sorted(found, key=lambda e: e.get('counter', 0))

    def _read(self, name):
        path = self.dir / name
        return path.read_text(encoding='utf-8').strip() if path.is_file() else None

    def events_of(self, kind):
        return [e for e in self.events if e.get('event') == kind]

    @property
    def stats(self):
        found = self.events_of('playbook_on_stats')
        assert len(found) == 1, self
        return found[0]['event_data']

    def failed_tasks(self):
        return [e['event_data'].get('task', '') for e in self.events_of('runner_on_failed')
                if not e['event_data'].get('ignore_errors')]

    def task_results(self, suffix):
        return [e['event_data']['res'] for e in self.events
                if e.get('event') in ('runner_on_ok', 'runner_on_failed') and e['event_data'].get('task', '').endswith(suffix)]

    def artifact_files(self):
        """Every regular file the job left under artifacts/<ident>/."""
        return [p for p in self.dir.rglob('*') if p.is_file() and not p.is_symlink()]

    def __repr__(self):
        failed = [dict(task=e['event_data'].get('task'), res=e['event_data'].get('res'))
                  for e in self.events_of('runner_on_failed')]
        return 'status %s rc %s\nfailed: %s\nstdout: %s\nrunner stderr: %s' % (
            self.status, self.rc, json.dumps(failed, indent=1, default=str)[-5000:], self.stdout[-5000:],
            self.proc.stderr.decode('utf-8', 'replace')[-2000:])


def doc_blocks(path=DOC):
    """{file: text} of the doc's fenced blocks that start with a line ``# extensions/<dir>/<file>``."""
    found = {}
    text = Path(path).read_text(encoding='utf-8')
    for match in re.finditer(r'^```[a-z]*\n(.*?)^```$', text, re.M | re.S):
        body = match.group(1)
        first, _sep, rest = body.partition('\n')
        label = re.match(r'^(?:#|//) (extensions/(?:awx|ee)/\S+)$', first.strip())
        if label:
            found[label.group(1)] = rest
    return found
