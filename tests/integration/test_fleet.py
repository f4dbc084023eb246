# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The backup and drill playbooks over a fleet: six managed hosts in containers reached over SSH
(key login as an unprivileged user, ``become`` through sudo), each with its own PostgreSQL server,
plus an inventory host that SSH does not reach; one of the six has its database down. Both
playbooks run with ``-f 7``. The healthy hosts' sets are complete, verified and offsite (a real
rclone S3 endpoint on 127.0.0.1); the play recap names the unreachable host as unreachable and the
host with the broken database as failed; each host's status file names its outcome; the drill
restores every healthy host's offsite set into a staging database, and the fleet report names
every host of the play."""

from __future__ import annotations

import json

import pytest

import fleet_support as fs
from offsite_support import S3Endpoint

GOOD = ['idp%d' % n for n in range(1, 6)]
BROKEN = 'idp6'
UNREACHABLE = 'idp7'
FORKS = 7


@pytest.fixture(scope='module')
def fleet(tmp_path_factory):
    fleet = fs.Fleet(tmp_path_factory.mktemp('fleet'), prefix='idp-test-fleet')
    try:
        for name in GOOD:
            fleet.add(name)
        fleet.add(BROKEN, database=False)
        fleet.unreachable(UNREACHABLE)
        yield fleet
    finally:
        fleet.close()


@pytest.fixture(scope='module')
def offsite(tmp_path_factory, request):
    # the s3_server fixture is function-scoped; this module needs one endpoint for both playbooks
    root = tmp_path_factory.mktemp('s3')
    server = S3Endpoint(root / 'data', root / 's3.log').start()
    request.addfinalizer(server.stop)
    return server


@pytest.fixture(scope='module')
def backup_run(fleet, offsite, test_env, keys):
    fleet.inventory(offsite.args(prefix='fleet'), keys.age_recipient, keys.age_identity.read_text())
    return fleet.playbook('idp.recovery.backup', test_env, FORKS)


def _hosts(fleet):
    return dict((h.name, h) for h in fleet.hosts)


def test_backup_over_ssh_completes_the_healthy_hosts_and_names_the_failures(fleet, offsite, backup_run):
    rc, stdout, stderr, seconds = backup_run
    assert rc != 0, 'a failed and an unreachable host must fail the run'
    recap = fs.play_recap(stdout)
    assert sorted(recap) == sorted(GOOD + [BROKEN, UNREACHABLE]), stdout[-3000:]
    for name in GOOD:
        assert recap[name]['failed'] == 0 and recap[name]['unreachable'] == 0, (name, recap[name], stdout[-6000:])
    assert recap[BROKEN]['failed'] >= 1 and recap[BROKEN]['unreachable'] == 0, recap[BROKEN]
    assert recap[UNREACHABLE]['unreachable'] >= 1 and recap[UNREACHABLE]['failed'] == 0, recap[UNREACHABLE]
    assert 'fatal: [%s]: UNREACHABLE!' % UNREACHABLE in stdout
    assert 'fatal: [%s]: FAILED!' % BROKEN in stdout

    hosts = _hosts(fleet)
    for name in GOOD:
        host = hosts[name]
        status = host.read_json('/var/lib/idp-recovery/last-backup.json')
        assert status['host'] == name and status['result'] == 'ok', status
        entry = status['services'][fs.SERVICE]
        assert entry['result'] == 'ok' and entry['offsite'] == 'ok', entry
        set_dir = entry['set']
        assert set_dir.startswith('/var/backups/idp-recovery/%s/' % fs.SERVICE), set_dir
        # root owns what the run wrote: the login user is unprivileged, the tasks ran with become
        assert host.exec('stat', '-c', '%U %a', '/var/lib/idp-recovery/last-backup.json').split() == ['root', '600']
        assert host.exec('id', '-u', fs.LOGIN_USER, user=fs.LOGIN_USER).strip() != '0'
        # complete (MANIFEST.sha256, no pending payload) and verified: the manifest checks with the stock
        # sha256sum on the host and lists every payload the metadata names
        metadata = json.loads(host.exec('cat', set_dir + '/metadata.json'))
        assert metadata['origin']['host'] == name, metadata
        assert host.exec('find', set_dir, '-name', 'pending-*') == ''
        host.exec('sh', '-c', 'cd "$1" && sha256sum --quiet --strict -c MANIFEST.sha256', 'sh', set_dir)
        manifest = host.exec('cat', set_dir + '/MANIFEST.sha256')
        assert metadata['payloads'] and all(p in manifest for p in metadata['payloads']), (manifest, metadata)
        local = sorted(host.exec('find', set_dir, '-type', 'f', '-printf', '%P %s\\n').splitlines())
        # offsite: every file of the set, with the same size, under the host's own prefix
        remote_dir = offsite.path('fleet') / name / fs.SERVICE / set_dir.rsplit('/', 1)[1]
        assert remote_dir.is_dir(), (remote_dir, list(offsite.path('fleet').rglob('*'))[:20])
        remote = sorted('%s %d' % (p.relative_to(remote_dir), p.stat().st_size)
                        for p in remote_dir.rglob('*') if p.is_file())
        assert remote == local, (name, remote, local)
        # reached over SSH with the run's key, as the login user
        logs = host.exec('cat', '/var/log/sshd.log')
        assert 'Accepted publickey for %s' % fs.LOGIN_USER in logs, logs[-2000:]

    broken = hosts[BROKEN].read_json('/var/lib/idp-recovery/last-backup.json')
    assert broken['host'] == BROKEN and broken['result'] == 'failed', broken
    entry = broken['services'][fs.SERVICE]
    assert entry['result'] != 'ok' and entry['local'] != 'ok' and entry['set'] in ('', None), entry
    assert not (offsite.path('fleet') / BROKEN).exists()
    assert not (offsite.path('fleet') / UNREACHABLE).exists()
    for host in fleet.hosts:
        assert host.password not in stdout + stderr


def test_drill_over_ssh_reports_every_host(fleet, offsite, backup_run, test_env):
    rc, stdout, stderr, seconds = fleet.playbook('idp.recovery.drill', test_env, FORKS)
    assert rc != 0
    recap = fs.play_recap(stdout)
    for name in GOOD:
        assert recap[name]['failed'] == 0 and recap[name]['unreachable'] == 0, (name, recap[name], stdout[-8000:])
    assert recap[BROKEN]['failed'] >= 1 and recap[BROKEN]['unreachable'] == 0, recap[BROKEN]
    assert recap[UNREACHABLE]['unreachable'] >= 1, recap[UNREACHABLE]

    hosts = _hosts(fleet)
    for name in GOOD:
        report = hosts[name].read_json('/var/lib/idp-recovery/drills/latest.json')
        assert report['result'] == 'passed', (name, report)
        (service,) = report['services']
        assert service['name'] == fs.SERVICE and service['result'] == 'passed', service
        # the offsite set was restored into the staging database of that host
        assert hosts[name].psql('SELECT count(*) FROM public.account', database=fs.DATABASE + '_drill') == str(fs.ROWS)
    broken = hosts[BROKEN].read_json('/var/lib/idp-recovery/drills/latest.json')
    assert broken['result'] == 'failed', broken

    fleet_report = json.loads((fleet.workdir / 'fleet-drill.json').read_text())
    assert oct((fleet.workdir / 'fleet-drill.json').stat().st_mode & 0o777) == '0o600'
    by_host = dict((h['host'], h) for h in fleet_report['hosts'])
    assert sorted(by_host) == sorted(GOOD + [BROKEN, UNREACHABLE]), fleet_report
    for name in GOOD:
        assert by_host[name]['result'] == 'passed', by_host[name]
        assert [s['name'] for s in by_host[name]['services']] == [fs.SERVICE]
    assert by_host[BROKEN]['result'] == 'failed' and by_host[BROKEN]['reasons'], by_host[BROKEN]
    assert by_host[UNREACHABLE]['result'] == 'unreachable', by_host[UNREACHABLE]
    assert fleet_report['summary'] == {'passed': len(GOOD), 'failed': 1, 'unreachable': 1}, fleet_report['summary']
    text = json.dumps(fleet_report) + stdout + stderr
    for host in fleet.hosts:
        assert host.password not in text
