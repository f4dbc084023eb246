# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._pgbackrest import restore


@pytest.mark.parametrize('spelling', [
    '/var/lib/postgresql/data', '/var/lib/postgresql/data/', '/var/lib/postgresql/data/.', '/var/lib/postgresql//data',
    '//var/lib/postgresql/data', '///var/lib/postgresql/data/./', '/var/lib/postgresql/x/../data',
    '/var/lib/postgresql/data/../data'])
def test_normalise_path(spelling):
    assert restore.normalise_path(spelling) == '/var/lib/postgresql/data'


def test_normalise_path_and_within():
    assert restore.normalise_path('/') == '/' and restore.normalise_path('//') == '/'
    with pytest.raises(RecoveryError, match='data_dir must be an absolute path'):
        restore.normalise_path('var/lib', 'data_dir')
    assert restore.path_within('/a/b', '/a') and restore.path_within('/a', '/a')
    assert restore.path_within('/a', '/') and not restore.path_within('/ab', '/a')
    assert not restore.path_within('/a', '/a/b')


PGDATA = '/var/lib/postgresql/data'
STAGING_PATHS = ['/etc/pgbackrest', '/var/log/pgbackrest', '/run/postgresql', '/tmp']
VOLUME_MOUNT = {'Type': 'volume', 'Name': 'repo', 'Source': '/var/lib/docker/volumes/repo/_data',
                'Destination': '/var/lib/pgbackrest', 'RW': True}


def test_plan_repo_mount():
    plan = restore.plan_repo_mount('/var/lib/pgbackrest', [VOLUME_MOUNT], PGDATA, STAGING_PATHS)
    assert plan == {'access': 'mount', 'mount_type': 'volume', 'source': 'repo', 'destination': '/var/lib/pgbackrest',
                    'bind': 'repo:/var/lib/pgbackrest:ro'}
    # below the volume's mount point: the whole volume at its own path
    below = dict(VOLUME_MOUNT, Destination='/backup')
    assert restore.plan_repo_mount('/backup/pgbackrest/', [below], PGDATA, STAGING_PATHS)['bind'] == 'repo:/backup:ro'
    # the deepest mount holding the path wins; a bind mount gives exactly the repository's host directory
    bind = {'Type': 'bind', 'Source': '/srv/host-backup', 'Destination': '/backup/pg', 'RW': True}
    plan = restore.plan_repo_mount('/backup/pg/repo', [below, bind], PGDATA, STAGING_PATHS)
    assert plan['mount_type'] == 'bind' and plan['bind'] == '/srv/host-backup/repo:/backup/pg/repo:ro'
    # no mount: a copy
    plan = restore.plan_repo_mount('/srv/pgbackrest', [VOLUME_MOUNT], PGDATA, STAGING_PATHS)
    assert plan['access'] == 'copy' and 'own file system' in plan['reason']
    # a volume whose mount point would cover the staging data directory is copied, not mounted
    parent = dict(VOLUME_MOUNT, Destination='/var/lib/postgresql')
    plan = restore.plan_repo_mount('/var/lib/postgresql/backrest', [parent], PGDATA, STAGING_PATHS)
    assert plan['access'] == 'copy' and 'cover' in plan['reason']
    # below a directory the staging container writes is fine; over it is not
    assert restore.plan_repo_mount('/tmp/repo', [], PGDATA, STAGING_PATHS)['access'] == 'copy'
    tmpfs = {'Type': 'tmpfs', 'Destination': '/var/lib/pgbackrest'}
    assert restore.plan_repo_mount('/var/lib/pgbackrest', [tmpfs], PGDATA, STAGING_PATHS)['access'] == 'copy'


@pytest.mark.parametrize('path', ['/var/lib/postgresql/data/repo', '/var/lib/postgresql', '/etc', '/'])
def test_plan_repo_mount_refuses_a_repository_over_the_staging_directories(path):
    with pytest.raises(RecoveryError, match='overlaps the staging container'):
        restore.plan_repo_mount(path, [VOLUME_MOUNT], PGDATA, STAGING_PATHS)
