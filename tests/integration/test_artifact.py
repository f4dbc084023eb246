# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The collection as it is published: ``ansible-galaxy collection build`` of the checkout, installed
into an empty collections path, holds what it must and nothing of the development tree, and the
smoke play (tests/versions/smoke.yml: back up, verify and extract a directory with an age set) runs
from that installation alone - so a missing ``build_ignore`` entry or a packaging error fails here."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile

import pytest
import yaml

import conftest

ROOT = conftest.ROOT
SMOKE = ROOT / 'tests' / 'versions' / 'smoke.yml'
# never shipped: development state, caches, secrets of a demo, build outputs
NEVER = ('.venv/', '.build/', '.demo/', '.git/', '.ci/', 'tests/output/', 'bench/results/', '.pytest_cache/')
NEVER_SUFFIX = ('.pyc', '.tar.gz', '.retry')
MUST = ('MANIFEST.json', 'FILES.json', 'meta/runtime.yml', 'meta/execution-environment.yml', 'requirements.txt',
        'bindep.txt', 'README.md', 'plugins/modules/backup_set.py', 'plugins/module_utils/_crypto.py',
        'roles/backup/meta/argument_specs.yml', 'playbooks/backup.yml', 'extensions/awx/group_vars.yml')


def _run(argv, env, cwd=None, timeout=600):
    proc = subprocess.run([str(a) for a in argv], env=env, cwd=cwd, capture_output=True, timeout=timeout,
                          check=False, stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stdout.decode('utf-8', 'replace'), proc.stderr.decode('utf-8', 'replace')


@pytest.fixture(scope='module')
def installed(tmp_path_factory, test_env):
    """(artifact path, collections path with only the artifact installed, env that sees only that path)."""
    base = tmp_path_factory.mktemp('artifact')
    rc, out, err = _run([conftest.TOOL_BIN / 'ansible-galaxy', 'collection', 'build', '--output-path', base / 'dist',
                         ROOT], test_env)
    assert rc == 0, out + err
    version = yaml.safe_load((ROOT / 'galaxy.yml').read_text())['version']
    artifact = base / 'dist' / ('idp-recovery-%s.tar.gz' % version)
    assert artifact.is_file(), list((base / 'dist').iterdir())
    collections = base / 'collections'
    collections.mkdir()
    env = dict(test_env, ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH='False')
    env.pop('PYTHONPATH', None)
    rc, out, err = _run([conftest.TOOL_BIN / 'ansible-galaxy', 'collection', 'install', '--no-deps', '-p',
                         collections, artifact], env)
    assert rc == 0, out + err
    return artifact, collections, env


def test_artifact_holds_the_collection_and_nothing_of_the_development_tree(installed):
    artifact, collections, _env = installed
    with tarfile.open(str(artifact)) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        files = json.load(tar.extractfile('FILES.json'))
    assert [m.name for m in members if not (m.isfile() or m.isdir())] == [], 'links or devices in the artifact'
    listed = set(f['name'] for f in files['files'])
    for name in MUST:
        assert name in names, '%s is missing from the artifact' % name
    bad = [n for n in names if n.startswith(NEVER) or n.endswith(NEVER_SUFFIX) or '/__pycache__/' in '/' + n]
    assert bad == [], 'never shipped, yet in the artifact: %s' % bad[:20]
    # every file of the artifact is listed (with its checksum) in FILES.json, and installed
    assert set(n for n, m in zip(names, members) if m.isfile()) - {'MANIFEST.json', 'FILES.json'} == \
        set(f['name'] for f in files['files'] if f['ftype'] == 'file')
    root = collections / 'ansible_collections' / 'idp' / 'recovery'
    for name in listed:
        assert (root / name).exists(), name
    # the installed modules are executable Python files of the artifact, not links to the checkout
    assert not any(p.is_symlink() for p in root.rglob('*'))


def test_smoke_play_runs_from_the_installed_artifact(installed, tmp_path):
    _artifact, collections, env = installed
    # the only idp.recovery Ansible sees is the installed artifact
    rc, out, err = _run([conftest.TOOL_BIN / 'ansible-galaxy', 'collection', 'list', 'idp.recovery', '--format',
                         'json'], env)
    assert rc == 0, out + err
    assert list(json.loads(out)) == [str(collections / 'ansible_collections')], out
    rc, out, err = _run([conftest.TOOL_BIN / 'ansible-doc', 'idp.recovery.backup_set'], env)
    assert rc == 0 and 'backup_set' in out, out + err
    work = tmp_path / 'work'
    work.mkdir(mode=0o700)
    rc, out, err = _run([conftest.TOOL_BIN / 'ansible-playbook', '-i', 'localhost,', SMOKE, '-e', 'work=%s' % work,
                         '-v'], env, cwd=str(tmp_path))
    assert rc == 0, out[-6000:] + err[-3000:]
    assert 'failed=0' in out
    assert os.listdir(str(work / 'restored')) and (work / 'restored' / 'sub' / 'b.txt').read_text() == 'second file\n'
