# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The execution environment: ``scripts/ee-build.sh`` builds extensions/ee/execution-environment.yml
with ansible-builder from the local Debian image (the collection artifact and a wheelhouse prepared
on this machine, no package index in the build); the image carries the collection as built by
``ansible-galaxy collection build`` and the tools of bindep.txt; ``ansible-builder introspect
--sanitize`` of the installed artifact lists exactly requirements.txt and bindep.txt; and
``ansible-playbook idp.recovery.backup`` run from the image backs up the demo stack
(scripts/demo/stack.yml) and copies it offsite, as an AWX job in that execution environment would."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest
import yaml

import conftest
from prerequisites import not_installed

ROOT = conftest.ROOT
TAG = 'idp-recovery/ee:test'


def _run(argv, env=None, timeout=900, check=True):
    proc = subprocess.run([str(a) for a in argv], env=env, capture_output=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        command = ' '.join(str(a) for a in argv[:4])
        raise AssertionError('%s exited with %d:\n%s\n%s' % (command, proc.returncode,
                                                             proc.stdout.decode(errors='replace')[-4000:],
                                                             proc.stderr.decode(errors='replace')[-4000:]))
    return proc


def _requirement_lines(path):
    lines = []
    for line in (ROOT / path).read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            lines.append(line)
    return lines


@pytest.fixture(scope='module')
def ee_image(test_env):
    if _run(['docker', 'info'], check=False).returncode != 0:
        not_installed('the Docker engine is not reachable (make setup starts it)')
    if _run(['docker', 'image', 'inspect', 'idp-recovery/postgres:15'], check=False).returncode != 0:
        not_installed('idp-recovery/postgres:15 is missing: run make setup')
    _run([ROOT / 'scripts' / 'ee-build.sh', '--if-needed', '--tag', TAG], env=test_env, timeout=1800)
    return TAG


def _in_image(image, *command, **kwargs):
    return _run(['docker', 'run', '--rm', image] + list(command), **kwargs).stdout.decode()


def test_image_carries_the_built_collection_and_its_tools(ee_image):
    label = json.loads(_run(['docker', 'image', 'inspect', ee_image]).stdout)[0]['Config']['Labels']
    assert label.get('ansible-execution-environment') == 'true', label
    assert label.get('org.idp-recovery.recipe'), label
    listing = _in_image(ee_image, 'ansible-galaxy', 'collection', 'list', 'idp.recovery', '--format', 'json')
    found = json.loads(listing)
    version = yaml.safe_load((ROOT / 'galaxy.yml').read_text())['version']
    assert [v['version'] for path in found.values() for v in path.values()] == [version], found
    # the image holds the artifact's files, not the checkout: FILES.json lists exactly what was installed
    files = json.loads(_in_image(ee_image, 'cat', '/usr/share/ansible/collections/ansible_collections/idp/recovery/'
                                                  'FILES.json'))
    names = set(f['name'] for f in files['files'])
    assert 'plugins/modules/backup_set.py' in names and 'roles/backup/tasks/main.yml' in names
    assert not [n for n in names if n.startswith(('.venv', '.build', 'tests/output', 'bench/results', '.git/'))]
    # the system packages of bindep.txt and the Python libraries of requirements.txt, in the image
    _in_image(ee_image, 'sh', '-c', 'for t in age zstd gzip tar gpg pg_dump psql rsync ssh rclone python3; do '
                                    'command -v "$t" > /dev/null || { echo "missing $t"; exit 1; }; done')
    _in_image(ee_image, 'python3', '-c', 'import docker, psycopg2, cryptography, ansible_runner')
    # the image runs as a non-root user, as AWX runs it
    assert _in_image(ee_image, 'id', '-u').strip() != '0'


def test_introspect_sanitize_lists_exactly_requirements_and_bindep(test_env, tmp_path, ee_image):
    artifact = ROOT / '.build' / 'ee' / 'def' / 'idp-recovery.tar.gz'
    assert artifact.is_file(), 'scripts/ee-build.sh keeps the artifact it built at %s' % artifact
    collections = tmp_path / 'collections'
    _run([conftest.TOOL_BIN / 'ansible-galaxy', 'collection', 'install', '--no-deps', '--force', '-p', collections, artifact],
         env=test_env)
    assert (collections / 'ansible_collections' / 'idp' / 'recovery' / 'MANIFEST.json').is_file()
    out = _run([conftest.TOOL_BIN / 'ansible-builder', 'introspect', '--sanitize', collections], env=test_env)
    data = yaml.safe_load(out.stdout.decode())

    def entries(kind):
        # each line is "<requirement>  # from collection idp.recovery"
        found = []
        for line in data.get(kind) or []:
            requirement, _sep, origin = line.partition('#')
            assert origin.strip() == 'from collection idp.recovery', line
            found.append(requirement.strip())
        return found

    assert entries('python') == _requirement_lines('requirements.txt'), out.stdout.decode()
    assert entries('system') == _requirement_lines('bindep.txt'), out.stdout.decode()


@pytest.fixture(scope='module')
def demo_stack(test_env, tmp_path_factory):
    demo_dir = tmp_path_factory.mktemp('ee-demo')
    os.chmod(str(demo_dir), 0o700)
    prefix = 'idp-ee-demo-%s' % uuid.uuid4().hex[:6]
    stack = ROOT / 'scripts' / 'demo' / 'stack.yml'
    argv = [conftest.TOOL_BIN / 'ansible-playbook', stack, '-e', 'idp_demo_dir=%s' % demo_dir,
            '-e', 'idp_demo_prefix=%s' % prefix, '-e', 'idp_demo_users=50']
    try:
        _run(argv, env=test_env, timeout=900)
        yield demo_dir, prefix
    finally:
        _run(argv + ['-e', 'idp_demo_state=absent'], env=test_env, timeout=300, check=False)


def test_backup_playbook_from_the_image_backs_up_the_demo_stack(ee_image, demo_stack):
    demo_dir, prefix = demo_stack
    socket = '/var/run/docker.sock'
    argv = ['docker', 'run', '--rm', '--network', 'host',
            '--user', '%d:%d' % (os.getuid(), os.getgid()), '--group-add', str(os.stat(socket).st_gid),
            '-v', '%s:%s' % (socket, socket), '-v', '%s:%s' % (demo_dir, demo_dir), '-w', str(demo_dir),
            '-e', 'HOME=/runner', '-e', 'ANSIBLE_NOCOLOR=1', '-e', 'ANSIBLE_FORCE_COLOR=0',
            ee_image, 'ansible-playbook', '-i', str(demo_dir / 'inventory.yml'), 'idp.recovery.backup',
            '-e', 'ansible_python_interpreter=/usr/bin/python3']
    proc = _run(argv, timeout=900, check=False)
    stdout = proc.stdout.decode(errors='replace')
    assert proc.returncode == 0, stdout[-6000:] + proc.stderr.decode(errors='replace')[-3000:]
    # the collection that ran is the image's, not the checkout's
    assert str(ROOT) not in stdout
    status = json.loads((demo_dir / 'status' / 'last-backup.json').read_text())
    assert status['result'] == 'ok', status
    assert sorted(status['services']) == ['authentik', 'kratos'], status
    for name, entry in status['services'].items():
        assert entry['result'] == 'ok' and entry['offsite'] == 'ok', (name, entry)
        set_dir = demo_dir / 'backups' / name / os.path.basename(entry['set'])
        assert (set_dir / 'MANIFEST.sha256').is_file(), set_dir
        _run(['sh', '-c', 'cd "$1" && sha256sum --quiet --strict -c MANIFEST.sha256', 'sh', set_dir])
        remote = demo_dir / 's3' / 'idp-offsite' / 'demo' / name / set_dir.name / 'MANIFEST.sha256'
        assert remote.is_file() and remote.read_bytes() == (set_dir / 'MANIFEST.sha256').read_bytes(), remote
    assert (demo_dir / 'secrets' / 's3').read_text().strip() not in stdout
    assert prefix in (demo_dir / 'inventory.yml').read_text()
