# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Fixtures of the integration tests: the real modules, real keys, real tools.

Modules run in one of two ways:

* ``run_module(name, check_mode=False, **args)`` runs a module the way Ansible does in debug
  mode, ``python -m ansible_collections.idp.recovery.plugins.modules.NAME args.json``, with the
  arguments in a 0600 file, and returns the module's result dict.
* ``run_playbook(tasks, verbosity=0)`` writes a playbook for localhost around the given tasks,
  runs ``ansible-playbook`` with the ``ansible.posix.json`` callback and returns
  ``(rc, stdout, stderr)``; ``run_playbook.results(stdout)`` turns the output into one result
  dict per task.

Keys are real: age X25519 identities (``age-keygen``), an SSH ed25519 key (``ssh-keygen``) and an
OpenPGP keyring in a temporary GNUPGHOME holding one key without and one with a passphrase. The
gpg-agent of that keyring caches nothing and is stopped at the end of the run.

Tools come from ``<repo>/.venv/bin`` when ``make setup`` created it, else from the directory of
the ``ansible-playbook`` found on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
COLLECTIONS = ROOT / '.build' / 'collections'
COLLECTION_LINK = COLLECTIONS / 'ansible_collections' / 'idp' / 'recovery'
MODULE_PACKAGE = 'ansible_collections.idp.recovery.plugins.modules'
JSON_CALLBACK = 'ansible.posix.json'

if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


def _tool_bin():
    venv = ROOT / '.venv' / 'bin'
    if (venv / 'ansible-playbook').exists():
        return venv
    found = shutil.which('ansible-playbook')
    if found:
        return Path(found).parent
    return Path(sys.executable).parent


TOOL_BIN = _tool_bin()
PYTHON = TOOL_BIN / 'python' if (TOOL_BIN / 'python').exists() else Path(sys.executable)


def ensure_collection_link():
    """Make <repo>/.build/collections/ansible_collections/idp/recovery point at the repository."""
    link = COLLECTION_LINK
    if link.is_symlink() and link.resolve() == ROOT:
        return
    if link.exists() and not link.is_symlink():
        if link.resolve() == ROOT:
            return
        raise RuntimeError('%s exists and is not a link to %s; remove it so that the tests run this tree'
                           % (link, ROOT))
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.parent / ('.recovery.link-%d' % os.getpid())
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(str(ROOT), str(tmp))
    os.replace(str(tmp), str(link))


ensure_collection_link()
os.environ['ANSIBLE_COLLECTIONS_PATH'] = str(COLLECTIONS)


def _private_dir(parent, prefix):
    return Path(tempfile.mkdtemp(prefix=prefix, dir=str(parent)))


def _write_private(path, text):
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'w', encoding='utf-8') as handle:
        handle.write(text)


def _json_default(value):
    if isinstance(value, Path):
        return str(value)
    raise TypeError('cannot serialise %r' % (value,))


class ModuleRunner(object):
    """Runs a module of this collection as Ansible does in debug mode."""

    def __init__(self, env, workdir):
        self.env = env
        self.workdir = Path(workdir)

    def command(self, name, check_mode=False, **args):
        """(argv, env, directory) that run module ``name`` with ``args``; the caller runs it."""
        args = dict(args)
        args['_ansible_check_mode'] = bool(check_mode)
        directory = _private_dir(self.workdir, 'module-')
        args_file = directory / 'args.json'
        _write_private(args_file, json.dumps({'ANSIBLE_MODULE_ARGS': args}, default=_json_default))
        argv = [str(PYTHON), '-m', '%s.%s' % (MODULE_PACKAGE, name), str(args_file)]
        env = dict(self.env)
        env['PYTHONPATH'] = str(COLLECTIONS)
        return argv, env, directory

    def __call__(self, name, check_mode=False, **args):
        argv, env, directory = self.command(name, check_mode=check_mode, **args)
        try:
            proc = subprocess.run(argv, env=env, cwd=str(directory), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=300, check=False)
        finally:
            shutil.rmtree(str(directory), ignore_errors=True)
        result = parse_module_output(proc.stdout.decode('utf-8', 'replace'))
        if result is None:
            raise AssertionError('module %s printed no result (rc %s)\nstdout: %s\nstderr: %s' % (
                name, proc.returncode, proc.stdout.decode('utf-8', 'replace'), proc.stderr.decode('utf-8', 'replace')))
        result['_rc'] = proc.returncode
        if proc.returncode != 0 and not result.get('failed'):
            raise AssertionError('module %s exited with %s without failing: %r' % (name, proc.returncode, result))
        return result


def parse_module_output(stdout):
    """The JSON result a module printed (the last line that is a JSON object), or None."""
    text = stdout.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith('{'):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


class PlaybookRunner(object):
    """Runs generated one-play playbooks on localhost with ansible-playbook."""

    def __init__(self, env, workdir):
        self.env = env
        self.workdir = Path(workdir)

    def command(self, tasks, verbosity=0, check=False, callback=JSON_CALLBACK, extra_env=None):
        """(argv, env, directory) for a playbook made of ``tasks``; the caller runs it."""
        directory = _private_dir(self.workdir, 'playbook-')
        play = [{
            'name': 'idp.recovery integration test',
            'hosts': 'localhost',
            'connection': 'local',
            'gather_facts': False,
            'tasks': tasks,
        }]
        playbook = directory / 'playbook.yml'
        _write_private(playbook, json.dumps(play, indent=2, default=_json_default))
        argv = [str(TOOL_BIN / 'ansible-playbook'), '-i', 'localhost,', str(playbook)]
        if verbosity:
            argv.append('-' + 'v' * verbosity)
        if check:
            argv.append('--check')
        env = dict(self.env)
        if callback:
            env['ANSIBLE_STDOUT_CALLBACK'] = callback
        env.update(extra_env or {})
        return argv, env, directory

    def start(self, tasks, verbosity=0, check=False, callback=JSON_CALLBACK, extra_env=None):
        """Start the playbook in the background; returns the Popen (stdout and stderr are pipes)."""
        argv, env, directory = self.command(tasks, verbosity, check, callback, extra_env)
        return subprocess.Popen(argv, env=env, cwd=str(directory), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)

    def __call__(self, tasks, verbosity=0, check=False, callback=JSON_CALLBACK, extra_env=None, timeout=300):
        argv, env, directory = self.command(tasks, verbosity, check, callback, extra_env)
        try:
            proc = subprocess.run(argv, env=env, cwd=str(directory), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=timeout, check=False)
        finally:
            shutil.rmtree(str(directory), ignore_errors=True)
        return proc.returncode, proc.stdout.decode('utf-8', 'replace'), proc.stderr.decode('utf-8', 'replace')

    @staticmethod
    def results(stdout):
        """One dict per task run on localhost (the json callback's host result plus ``task``)."""
        document = _json_document(stdout)
        found = []
        for play in document['plays']:
            for task in play['tasks']:
                result = dict(task['hosts'].get('localhost', {}))
                result['task'] = task['task']['name']
                found.append(result)
        return found


def _json_document(stdout):
    """The JSON document the json callback printed, even after verbose lines."""
    decoder = json.JSONDecoder()
    starts = [0] if stdout.startswith('{') else []
    position = stdout.find('\n{')
    while position != -1:
        starts.append(position + 1)
        position = stdout.find('\n{', position + 1)
    for start in starts:
        try:
            document, _end = decoder.raw_decode(stdout[start:])
        except ValueError:
            continue
        if isinstance(document, dict) and 'plays' in document:
            return document
    raise AssertionError('no json callback output in:\n%s' % stdout[-4000:])


def _run(argv, env=None):
    return subprocess.run([str(a) for a in argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=120, check=True)


@pytest.fixture(scope='session')
def run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp('run')


@pytest.fixture(scope='session')
def gnupg_home(run_dir):
    """An empty OpenPGP home whose gpg-agent caches no passphrase and is stopped at the end."""
    home = run_dir / 'gnupg'
    home.mkdir(mode=0o700)
    (home / 'gpg-agent.conf').write_text('default-cache-ttl 0\nmax-cache-ttl 0\nallow-loopback-pinentry\n')
    yield home
    subprocess.run(['gpgconf', '--homedir', str(home), '--kill', 'all'],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


@pytest.fixture(scope='session')
def test_env(run_dir, gnupg_home):
    """The environment of every module and playbook run (and of the stock tools)."""
    ansible_home = run_dir / 'ansible'
    for sub in ('tmp', 'remote_tmp'):
        (ansible_home / sub).mkdir(parents=True, mode=0o700)
    env = dict(os.environ)
    env.update({
        'PATH': '%s:%s' % (TOOL_BIN, os.environ.get('PATH', '/usr/bin:/bin')),
        'ANSIBLE_COLLECTIONS_PATH': str(COLLECTIONS),
        'ANSIBLE_HOME': str(ansible_home),
        'ANSIBLE_LOCAL_TEMP': str(ansible_home / 'tmp'),
        'ANSIBLE_REMOTE_TEMP': str(ansible_home / 'remote_tmp'),
        'ANSIBLE_PYTHON_INTERPRETER': str(PYTHON),
        'ANSIBLE_NOCOLOR': '1',
        'ANSIBLE_FORCE_COLOR': '0',
        'ANSIBLE_LOCALHOST_WARNING': 'False',
        'ANSIBLE_INVENTORY_UNPARSED_WARNING': 'False',
        'ANSIBLE_RETRY_FILES_ENABLED': 'False',
        'ANSIBLE_DEPRECATION_WARNINGS': 'False',
        'GNUPGHOME': str(gnupg_home),
        'LC_ALL': 'C.UTF-8',
        'PYTHONDONTWRITEBYTECODE': '1',
    })
    for name in ('ANSIBLE_CONFIG', 'ANSIBLE_STDOUT_CALLBACK', 'ANSIBLE_CALLBACKS_ENABLED', 'PYTHONPATH'):
        env.pop(name, None)
    return env


@pytest.fixture(scope='session')
def module_runner(test_env, run_dir):
    workdir = run_dir / 'runs'
    workdir.mkdir(mode=0o700)
    return ModuleRunner(test_env, workdir)


@pytest.fixture
def run_module(module_runner):
    """``run_module(name, check_mode=False, **args) -> result dict`` (see the module docstring)."""
    return module_runner


@pytest.fixture
def run_playbook(test_env, run_dir):
    """``run_playbook(tasks, verbosity=0) -> (rc, stdout, stderr)`` (see the module docstring)."""
    workdir = run_dir / 'playbooks'
    workdir.mkdir(mode=0o700, exist_ok=True)
    return PlaybookRunner(test_env, workdir)


class Keys(object):
    """Real key material; every attribute is a str or a Path."""


def _gpg_fingerprint(home, uid, env):
    out = _run(['gpg', '--homedir', home, '--batch', '--with-colons', '--list-secret-keys', uid], env).stdout.decode()
    for line in out.splitlines():
        if line.startswith('fpr:'):
            return line.split(':')[9]
    raise AssertionError('no fingerprint for %s in:\n%s' % (uid, out))


def _gpg_generate(home, uid, passphrase, workdir, env):
    secret = workdir / ('%s.pass' % uid.split('@')[0])
    _write_private(secret, passphrase)
    _run(['gpg', '--homedir', home, '--batch', '--no-tty', '--pinentry-mode', 'loopback',
          '--passphrase-file', secret, '--quick-generate-key', uid, 'future-default', 'default', 'never'], env)
    return _gpg_fingerprint(home, uid, env)


@pytest.fixture(scope='session')
def keys(run_dir, gnupg_home, test_env):
    """age, SSH and OpenPGP keys made for this run."""
    directory = run_dir / 'keys'
    directory.mkdir(mode=0o700)
    found = Keys()
    found.dir = directory
    for attr in ('age', 'age_other'):
        identity = directory / ('%s.key' % attr)
        _run(['age-keygen', '-o', identity], test_env)
        setattr(found, attr + '_identity', identity)
        setattr(found, attr + '_recipient', _run(['age-keygen', '-y', identity], test_env).stdout.decode().strip())
    found.age_identity_content = found.age_identity.read_text()
    found.ssh_identity = directory / 'id_ed25519'
    _run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'restore@example.org', '-f', found.ssh_identity],
         test_env)
    found.ssh_recipient = (directory / 'id_ed25519.pub').read_text().strip()
    found.gpg_home = gnupg_home
    found.gpg_fpr = _gpg_generate(gnupg_home, 'backup@example.org', '', directory, test_env)
    found.gpg_protected_passphrase = 'key-pass-%s' % os.urandom(8).hex()
    found.gpg_protected_fpr = _gpg_generate(gnupg_home, 'protected@example.org', found.gpg_protected_passphrase,
                                            directory, test_env)
    return found
