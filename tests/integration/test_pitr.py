# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Point-in-time recovery with pgBackRest on real parts.

A PostgreSQL 15 container from the local image archives its WAL with pgBackRest (from the
image) into an encrypted S3 repository served by ``rclone serve s3`` over HTTPS on the Docker
bridge gateway; restores go into staging containers from the same image. The tests of this file
share that server and repository and run in file order; the WAL-gap test damages the archive and
runs last.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from pitr_support import (
    IMAGE,
    S3_NAME,
    SECRET_KEY,
    TlsS3,
    docker,
    have_prerequisites,
    remove,
    sql,
    start_postgres,
    wait_archived,
)

STANZA = 'authentik'
CIPHER = 'pitr-cipher-%s' % os.urandom(8).hex()
SUFFIX = os.urandom(3).hex()
LIVE = 'idp-pitr-live-%s' % SUFFIX
STAGING = 'idp-pitr-staging-%s' % SUFFIX
OPTIONS = {'start-fast': True, 'log-level-file': 'off'}
# a failing archive attempt gives up after seconds, not minutes (the outage test waits for one)
COMMAND_OPTIONS = {'archive-push': {'io-timeout': 10}}


@pytest.fixture(scope='module')
def s3(tmp_path_factory):
    have_prerequisites()
    server = TlsS3(tmp_path_factory.mktemp('pitr')).start()
    try:
        yield server
    finally:
        server.stop()


def common(s3, cipher=CIPHER):
    return {'stanza': STANZA, 'container': LIVE, 'pg_user': 'authentik', 'repos': [s3.repo(cipher)],
            'options': OPTIONS, 'command_options': COMMAND_OPTIONS}


def restore_args(s3, cipher=CIPHER, **extra):
    args = common(s3, cipher)
    args.update({'staging_container': STAGING, 'image': IMAGE, 'extra_hosts': {S3_NAME: s3.address},
                 'ready_timeout': 120})
    args.update(extra)
    return args


def ok(result):
    assert not result.get('failed'), result.get('msg')
    return result


@pytest.fixture(scope='module')
def live(s3, module_runner):
    try:
        start_postgres(LIVE, s3)
        sql(LIVE, 'CREATE TABLE items (id int PRIMARY KEY, note text); CREATE TABLE audit (id int)')
        planned = ok(module_runner('pgbackrest_setup', check_mode=True, **common(s3)))
        assert planned['changed'] and planned['restart_required'] and not planned['restarted']
        assert docker('exec', LIVE, 'sh', '-c', 'ls /etc/pgbackrest 2>/dev/null', check=False).strip() == ''
        assert sql(LIVE, "SELECT current_setting('archive_mode')") == 'off'
        first = ok(module_runner('pgbackrest_setup', **common(s3)))
        assert first['changed'] and first['restarted'] and first['config_changed']
        assert first['settings_changed'] == ['archive_command', 'archive_mode']
        assert first['pg_path'] == '/var/lib/postgresql/data'
        again = ok(module_runner('pgbackrest_setup', **common(s3)))
        assert not again['changed'] and not again['restarted'], again
        stat = os.popen('docker exec %s stat -c "%%a %%U" /etc/pgbackrest/pgbackrest.conf' % LIVE).read().split()
        assert stat == ['640', 'postgres']
        created = ok(module_runner('pgbackrest', stanza=STANZA, container=LIVE, command='stanza-create'))
        assert created['changed'] and created['info']['status_code'] == 2  # stanza exists, no backup yet
        again = ok(module_runner('pgbackrest', stanza=STANZA, container=LIVE, command='stanza-create'))
        assert not again['changed']
        ok(module_runner('pgbackrest', stanza=STANZA, container=LIVE, command='check'))
        backup = ok(module_runner('pgbackrest', stanza=STANZA, container=LIVE, command='backup', backup_type='full'))
        assert backup['backup_label'].endswith('F') and backup['info']['latest_backup'] == backup['backup_label']
        assert backup['info']['ok'] and backup['info']['cipher'] == 'aes-256-cbc'
        planned = ok(module_runner('pgbackrest', check_mode=True, stanza=STANZA, container=LIVE, command='backup'))
        assert planned['changed'] and planned['info']['latest_backup'] == backup['backup_label']
        assert len(planned['info']['backups']) == 1
        yield LIVE
    finally:
        remove(LIVE, STAGING)


def staged(text):
    return sql(STAGING, text)


def server_time(container):
    return sql(container, "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")


def test_restore_to_a_time_and_to_a_restore_point(live, s3, module_runner):
    sql(live, "INSERT INTO items SELECT g, 'before' FROM generate_series(1, 100) g; INSERT INTO audit VALUES (1)")
    time.sleep(1.1)
    target_time = server_time(live)
    point = ok(module_runner('pgbackrest', stanza=STANZA, container=live, pg_user='authentik',
                             command='restore-point', restore_point='before-migration'))
    assert point['restore_point']['archived'] and point['restore_point']['name'] == 'before-migration'
    assert point['info']['latest_backup']
    time.sleep(1.1)
    sql(live, "INSERT INTO items SELECT g, 'after' FROM generate_series(101, 250) g")
    sql(live, 'DROP TABLE audit')
    wait_archived(live)

    restored = ok(module_runner('pgbackrest_restore', **restore_args(s3, target_type='time', target=target_time)))
    assert restored['target_reached'] and restored['recovery_stop'].startswith('recovery stopping before commit')
    assert restored['timeline'] >= 2 and restored['backup_set'] == point['info']['latest_backup']
    assert restored['last_replayed_transaction'] < target_time
    assert staged("SELECT count(*), count(*) FILTER (WHERE note = 'after') FROM items") == '100|0'
    assert staged("SELECT count(*) FROM audit") == '1'
    assert staged('SELECT pg_is_in_recovery()') == 'f'
    assert staged("SELECT current_setting('archive_mode')") == 'off'
    print('restore to a time: restore %.2f s, recovery %.2f s, total %.2f s' % (
        restored['restore_seconds'], restored['recovery_seconds'], restored['total_seconds']))

    by_name = ok(module_runner('pgbackrest_restore', **restore_args(s3, target_type='name', target='before-migration')))
    assert by_name['target_reached'] and 'restore point "before-migration"' in by_name['recovery_stop']
    assert staged("SELECT count(*), count(*) FILTER (WHERE note = 'after') FROM items") == '100|0'
    assert staged("SELECT count(*) FROM audit") == '1'
    print('restore to a restore point: total %.2f s' % by_name['total_seconds'])

    # the live server is untouched and still archives
    assert sql(live, "SELECT count(*) FROM items") == '250'
    assert sql(live, "SELECT to_regclass('audit') IS NULL") == 't'
    assert sql(live, 'SELECT timeline_id FROM pg_control_checkpoint()') == '1'


def test_restore_to_a_backup_label(live, s3, module_runner):
    """A label: the backup itself, up to its consistency point - none of the rows written since."""
    info = ok(module_runner('pgbackrest', stanza=STANZA, container=live, command='info'))['info']
    first = info['backups'][0]['label']
    assert int(sql(live, 'SELECT count(*) FROM items')) > 0
    restored = ok(module_runner('pgbackrest_restore', **restore_args(s3, target_type='immediate', backup_set=first)))
    assert restored['backup_set'] == first and restored['target_reached']
    assert staged('SELECT count(*) FROM items') == '0'
    assert staged("SELECT to_regclass('audit') IS NOT NULL") == 't'


def test_archiving_survives_an_unreachable_repository(live, s3, module_runner):
    before = sql(live, 'SELECT failed_count FROM pg_stat_archiver')
    s3.stop()
    try:
        sql(live, "INSERT INTO items SELECT g, 'outage' FROM generate_series(1001, 1100) g")
        pending = sql(live, 'SELECT pg_walfile_name(pg_switch_wal())')
        sql(live, "INSERT INTO items SELECT g, 'outage' FROM generate_series(1101, 1200) g")
        deadline = time.monotonic() + 90
        while int(sql(live, 'SELECT failed_count FROM pg_stat_archiver')) <= int(before):
            assert time.monotonic() < deadline, 'the archiver never reported a failure'
            time.sleep(1)
        # PostgreSQL keeps the segment that could not be archived
        ready = os.popen('docker exec %s ls /var/lib/postgresql/data/pg_wal/archive_status' % live).read().split()
        assert '%s.ready' % pending in ready
        assert os.popen('docker exec %s ls /var/lib/postgresql/data/pg_wal' % live).read().split().count(pending) == 1
        assert sql(live, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")[8:] < pending[8:]
    finally:
        s3.start()
    last = wait_archived(live, timeout=150)
    assert last[8:] > pending[8:]
    restored = ok(module_runner('pgbackrest_restore', **restore_args(s3)))
    assert restored['target_reached'] and restored['target']['type'] == 'latest'
    assert staged("SELECT count(*) FROM items WHERE note = 'outage'") == '200'
    print('restore to the end of the archive after the outage: total %.2f s' % restored['total_seconds'])


def test_refuses_the_live_server(live, s3, module_runner):
    count = sql(live, 'SELECT count(*) FROM items')
    same = module_runner('pgbackrest_restore', **restore_args(s3, staging_container=LIVE))
    assert same['failed'] and same['refused'] and 'live server' in same['msg']
    args = common(s3)
    args.update(data_dir='/var/lib/postgresql/data', target_type='latest')
    in_place = module_runner('pgbackrest_restore', **args)
    assert in_place['failed'] and in_place['refused'] and 'confirm_live' in in_place['msg']
    checked = module_runner('pgbackrest_restore', check_mode=True, **args)
    assert checked['failed'] and checked['refused']
    assert sql(live, 'SELECT count(*) FROM items') == count
    assert sql(live, 'SELECT pg_is_in_recovery()') == 'f'


def test_restore_into_a_separate_data_directory(live, s3, module_runner):
    """The other staging target: a directory beside the live one, served on its own port."""
    data_dir = '/var/lib/postgresql/pitr-staging'
    args = common(s3)
    args.update(data_dir=data_dir, port=5499, target_type='latest', ready_timeout=120)
    expected = sql(live, 'SELECT count(*) FROM items')
    wait_archived(live)
    try:
        restored = ok(module_runner('pgbackrest_restore', **args))
        assert restored['data_dir'] == data_dir and restored['port'] == 5499 and restored['staging_container'] is None
        copy = docker('exec', '-u', 'postgres', live, 'psql', '-XAt', '-p', '5499', '-U', 'authentik', '-d', 'authentik',
                      '-c', 'SELECT count(*) FROM items').strip()
        assert copy == expected
        # the live server's own configuration is left as it was
        assert 'pg1-path=/var/lib/postgresql/data' in docker('exec', live, 'cat', '/etc/pgbackrest/pgbackrest.conf')
    finally:
        docker('exec', '-u', 'postgres', live, 'pg_ctl', '-D', data_dir, '-m', 'fast', 'stop', check=False)
        docker('exec', live, 'rm', '-rf', data_dir, '/etc/pgbackrest/pgbackrest.conf.staging-5499', check=False)
    assert sql(live, 'SELECT count(*) FROM items') == expected


def test_wrong_cipher_passphrase_restores_nothing(live, s3, module_runner):
    failed = module_runner('pgbackrest_restore', **restore_args(s3, cipher='not-the-passphrase'))
    assert failed['failed'] and 'cipher passphrase' in failed['msg'], failed['msg']
    assert 'not-the-passphrase' not in repr(failed) and CIPHER not in repr(failed)
    assert os.popen('docker ps -aq --filter name=^%s$' % STAGING).read().strip() == ''


def _role_vars(s3, **extra):
    args = common(s3)
    found = {'pitr_stanza': STANZA, 'pitr_container': LIVE, 'pitr_pg_user': 'authentik', 'pitr_repos': args['repos'],
             'pitr_options': OPTIONS, 'pitr_command_options': COMMAND_OPTIONS}
    found.update(extra)
    return found


def _play(run_playbook, tasks):
    rc, out, err = run_playbook(tasks)
    results = run_playbook.results(out) if out.strip() else []
    failed = [r for r in results if r.get('failed')]
    assert rc == 0 and not failed, (rc, [(r['task'], r.get('msg')) for r in failed], err[-2000:])
    # tasks of a role are named 'ROLE : NAME'
    return dict((r['task'].rpartition(' : ')[2], r) for r in results)


def test_role_checkpoint_and_restore_with_checks(live, s3, run_playbook, tmp_path):
    unit_dir = tmp_path / 'units'
    unit_dir.mkdir()
    metrics_dir = tmp_path / 'metrics'
    role_vars = _role_vars(s3, pitr_unit_dir=str(unit_dir), pitr_restore_point='role-checkpoint',
                           pitr_metrics_dir=str(metrics_dir))
    first = _play(run_playbook, [
        {'name': 'pitr setup', 'ansible.builtin.include_role': {'name': 'idp.recovery.pitr'}, 'vars': role_vars},
        {'name': 'pitr checkpoint', 'ansible.builtin.include_role': {'name': 'idp.recovery.pitr',
                                                                     'tasks_from': 'checkpoint.yml'},
         'vars': role_vars},
        {'name': 'show checkpoint', 'ansible.builtin.debug': {'var': 'pitr_checkpoint'}},
    ])
    setup = first['Write the pgBackRest configuration and turn on WAL archiving']
    assert not setup['changed'] and not setup['restarted']
    verify = first['Run systemd-analyze verify on the units']
    if os.path.exists('/usr/bin/systemd-analyze'):
        assert verify['rc'] == 0 and not verify.get('skipped'), verify
    # the newest backup's time, for the alert on its age
    metrics = (metrics_dir / ('idp_recovery_pitr_%s.prom' % STANZA)).read_text()
    newest = [line for line in metrics.splitlines()
              if line.startswith('idp_recovery_pitr_last_backup_timestamp_seconds{stanza="%s",type="full"} ' % STANZA)]
    assert len(newest) == 1 and 0 <= time.time() - float(newest[0].split()[-1]) < 3600, metrics
    assert 'idp_recovery_pitr_info_ok{stanza="%s"} 1' % STANZA in metrics
    assert 'idp_recovery_pitr_backup_age_target_seconds{stanza="%s"} 93600' % STANZA in metrics
    checkpoint = first['show checkpoint']['pitr_checkpoint']
    assert checkpoint['name'] == 'role-checkpoint' and checkpoint['latest_backup'] and checkpoint['lsn']
    full = (unit_dir / ('idp-recovery-pitr-%s-full.service' % STANZA)).read_text()
    assert "--type=full" in full and ('"%s"' % LIVE) in full and '"exec"' in full
    assert (unit_dir / ('idp-recovery-pitr-%s-diff.timer' % STANZA)).read_text().count('OnCalendar=Mon..Sat') == 1
    assert (unit_dir / 'timers.target.wants' / ('idp-recovery-pitr-%s-full.timer' % STANZA)).is_symlink()

    expected = int(sql(live, 'SELECT count(*) FROM items'))
    sql(live, "INSERT INTO items SELECT g, 'after-checkpoint' FROM generate_series(5001, 5050) g")
    wait_archived(live)
    restore_vars = dict(role_vars, pitr_restore_target_type='name', pitr_restore_target='role-checkpoint',
                        pitr_restore_staging_container=STAGING, pitr_restore_image=IMAGE,
                        pitr_restore_extra_hosts={S3_NAME: s3.address}, pitr_restore_database='authentik',
                        pitr_restore_expected_counts={'public.items': expected},
                        pitr_restore_checks=[{'name': 'nothing after the checkpoint',
                                              'sql': "SELECT count(*) FROM items WHERE note = 'after-checkpoint'",
                                              'expect': 0}],
                        pitr_restore_remove=True)
    second = _play(run_playbook, [
        {'name': 'pitr restore', 'ansible.builtin.include_role': {'name': 'idp.recovery.pitr',
                                                                  'tasks_from': 'restore.yml'},
         'vars': restore_vars},
        {'name': 'show restore', 'ansible.builtin.debug': {'var': 'pitr_restore_result'}},
    ])
    result = second['show restore']['pitr_restore_result']
    assert result['ok'] and result['failed_checks'] == 0 and len(result['checks']) == 2
    assert result['restore']['target_reached'] and result['restore']['timeline'] >= 2
    assert os.popen('docker ps -aq --filter name=^%s$' % STAGING).read().strip() == ''

    # a copy that does not pass its checks fails the task, naming what failed
    wrong = dict(restore_vars, pitr_restore_expected_counts={'public.items': expected + 50})
    rc, out, _err = run_playbook([{'name': 'pitr restore', 'ansible.builtin.include_role': {
        'name': 'idp.recovery.pitr', 'tasks_from': 'restore.yml'}, 'vars': wrong}])
    failed = [r for r in run_playbook.results(out) if r.get('failed')]
    assert rc != 0 and failed and 'failed SQL checks 1' in failed[-1]['msg'], failed


def test_drill_in_pitr_mode(live, s3, run_playbook, tmp_path):
    """The drill role's kind pitr: pgbackrest verify, the newest backup plus all archived WAL into a
    disposable container, the service's checks, and the report with the data-loss window."""
    sql(live, "INSERT INTO items SELECT g, 'for-the-drill' FROM generate_series(7001, 7020) g")
    expected = sql(live, 'SELECT count(*) FROM items')
    wait_archived(live)
    args = common(s3)
    pitr = {'stanza': STANZA, 'container': LIVE, 'pg_user': 'authentik', 'database': 'authentik',
            'repos': args['repos'], 'options': OPTIONS, 'image': IMAGE, 'extra_hosts': {S3_NAME: s3.address},
            'ready_timeout': 120}
    report_dir = tmp_path / 'drills'
    metrics_dir = tmp_path / 'metrics'
    metrics_dir.mkdir()
    drill_vars = {
        'drill_services': [{'name': 'ledger', 'kind': 'pitr', 'scratch_name': STAGING, 'pitr': pitr,
                            'sql_checks': [{'name': 'every row archived before the drill is back',
                                            'sql': 'SELECT count(*) FROM items', 'expect': int(expected)}]}],
        'drill_source': 'local', 'drill_backup_root': str(tmp_path / 'no-sets'), 'drill_workdir': str(tmp_path / 'work'),
        'drill_report_dir': str(report_dir), 'drill_metrics_dir': str(metrics_dir)}
    results = _play(run_playbook, [
        {'name': 'drill', 'ansible.builtin.include_role': {'name': 'idp.recovery.drill'}, 'vars': drill_vars}])
    assert 'Restore to the target into a disposable container (ledger)' in results
    report = json.loads((report_dir / 'latest.json').read_text())
    assert report['result'] == 'passed', report['reasons']
    service = report['services'][0]
    assert [step['name'] for step in service['steps']] == ['pgbackrest verify', 'restore', 'checks']
    kinds = dict((check['kind'], check) for check in service['checks'])
    assert kinds['verify']['ok'] and kinds['pitr']['ok'] and kinds['sql']['ok'], service['checks']
    assert kinds['sql']['actual'] == expected
    assert service['stamp'].endswith('F') or service['stamp'].endswith('D') or service['stamp'].endswith('I')
    # the data-loss window: the last replayed transaction is the one above, seconds before the drill
    assert 0 <= service['rpo_seconds'] < 600
    assert service['target'].startswith('scratch container %s' % STAGING)
    assert os.popen('docker ps -aq --filter name=^%s$' % STAGING).read().strip() == ''
    text = (report_dir / 'latest.json').read_text() + (report_dir / 'latest.html').read_text()
    assert CIPHER not in text and SECRET_KEY not in text
    assert 'idp_recovery_drill_success 1' in (metrics_dir / 'idp_recovery_drill.prom').read_text()


def test_a_gap_in_the_wal_archive_is_named(live, s3, module_runner):
    sql(live, "INSERT INTO items SELECT g, 'gap-1' FROM generate_series(2001, 2010) g")
    gap = wait_archived(live)
    sql(live, "INSERT INTO items SELECT g, 'gap-2' FROM generate_series(2011, 2020) g")
    wait_archived(live)
    time.sleep(1.1)
    target = server_time(live)
    time.sleep(1.1)
    sql(live, "INSERT INTO items SELECT g, 'gap-3' FROM generate_series(2021, 2030) g")
    wait_archived(live)
    files = s3.archive_files(STANZA)
    assert gap in files
    s3.delete_object(files[gap])
    assert gap not in s3.archive_files(STANZA)
    failed = module_runner('pgbackrest_restore', **restore_args(s3, target_type='time', target=target))
    assert failed['failed'], failed
    assert failed['missing_segment'] == gap and gap in failed['msg'] and 'gap' in failed['msg'], failed['msg']
    assert failed['redo_done_lsn'] and failed['redo_done_lsn'] in failed['msg']
    assert os.popen('docker ps -aq --filter name=^%s$' % STAGING).read().strip() == ''
    print('a restore across a WAL gap fails: %s' % failed['msg'])
