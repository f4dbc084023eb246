# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Check the systemd units the schedule role installed: content, modes, enable links and
`systemd-analyze verify` (the image has no systemd as PID 1: the units are checked as files)."""

import json
import os
import re
import shlex

import pytest
import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("schedule_systemd")

JOBS = {
    # name: (playbook, OnCalendar)
    "backup": ("idp.recovery.backup", "*-*-* 00/6:00:00"),
    "offsite": ("idp.recovery.backup", "*-*-* 02:30:00"),
    "drill": ("idp.recovery.drill", "*-*-01 04:00:00"),
}
UNIT_DIR = "/etc/systemd/system"
QUOTING = "100% $HOME \"quoted\" 'single' back\\slash"


@pytest.fixture(scope="module")
def settings(host):
    return host.ansible.get_variables()


def directives(text):
    """The `Name=value` lines of a unit file, as (name, value) pairs in order."""
    return [tuple(line.split("=", 1)) for line in text.splitlines() if re.match(r"^[A-Za-z]+=", line)]


def expected_argv(settings, job):
    argv = [
        "--inventory", settings["schedule_inventory"],
        "--extra-vars=@/etc/idp-recovery/site.yml",
        "--extra-vars=@/etc/idp-recovery/schedule/%s.json" % job,
    ]
    if job == "drill":
        argv.append("--tags=drill")
    return argv + [JOBS[job][0]]


def test_user_and_directories(host):
    user = host.user("idp-recovery")
    assert user.exists and user.group == "idp-recovery"
    assert user.home == "/var/lib/idp-recovery" and user.shell == "/usr/sbin/nologin"
    for path in ("/var/lib/idp-recovery", "/var/backups/idp"):
        d = host.file(path)
        assert d.is_directory and d.user == "idp-recovery" and d.group == "idp-recovery" and d.mode == 0o700, path
    # the cron method's log directory is not created for systemd (the jobs log to the journal)
    assert not host.file("/var/log/idp-recovery").exists


def test_job_settings(host):
    conf = host.file("/etc/idp-recovery/schedule")
    assert conf.is_directory and conf.user == "root" and conf.group == "idp-recovery" and conf.mode == 0o750
    assert sorted(conf.listdir()) == ["backup.json", "drill.json", "offsite.json"]
    for job in JOBS:
        f = host.file("/etc/idp-recovery/schedule/%s.json" % job)
        assert f.user == "root" and f.group == "idp-recovery" and f.mode == 0o640
        expected = {"backup": {"backup_offsite_enabled": False}, "offsite": {"molecule_offsite": True}, "drill": {}}
        assert json.loads(f.content_string) == expected[job]


@pytest.mark.parametrize("job", sorted(JOBS))
def test_units(host, settings, job):
    playbook, calendar = JOBS[job]
    service = host.file("%s/idp-recovery-%s.service" % (UNIT_DIR, job))
    timer = host.file("%s/idp-recovery-%s.timer" % (UNIT_DIR, job))
    for f in (service, timer):
        assert f.is_file and f.user == "root" and f.group == "root" and f.mode == 0o644
    s = dict(directives(service.content_string))
    assert s["Description"] == "idp.recovery %s (%s)" % (
        {"backup": "local backup", "offsite": "backup with offsite copy", "drill": "restore drill"}[job], playbook)
    assert s["Type"] == "oneshot"
    assert s["User"] == "idp-recovery" and s["Group"] == "idp-recovery"
    assert s["WorkingDirectory"] == "/var/lib/idp-recovery"
    assert s["OnFailure"] == "idp-recovery-molecule-failure.service"
    assert s["TimeoutStartSec"] == "14400"
    assert s["UMask"] == "0077" and s["NoNewPrivileges"] == "yes" and s["PrivateTmp"] == "yes"
    assert s["ProtectSystem"] == "strict" and s["ProtectHome"] == "read-only"
    assert s["ReadWritePaths"].split() == ["/var/backups/idp", "/var/lib/idp-recovery", "-/var/lib/idp-recovery-reports"]
    # systemd splits these words as a POSIX shell does with double quotes
    assert shlex.split(s["ExecStart"]) == [settings["schedule_ansible_playbook"]] + expected_argv(settings, job)
    envs = [shlex.split(value) for name, value in directives(service.content_string) if name == "Environment"]
    # % is a specifier in Environment=, written %%; $ is not expanded there, so it stays as it is
    assert ["IDP_MOLECULE_QUOTING=" + QUOTING.replace("%", "%%")] in envs
    assert ["HOME=/var/lib/idp-recovery", "ANSIBLE_NOCOLOR=1", "ANSIBLE_RETRY_FILES_ENABLED=0"] in envs
    t = dict(directives(timer.content_string))
    assert t["OnCalendar"] == calendar
    assert t["RandomizedDelaySec"] == "0" and t["Persistent"] == "true"
    assert t["Unit"] == "idp-recovery-%s.service" % job and t["WantedBy"] == "timers.target"
    link = host.file("%s/timers.target.wants/idp-recovery-%s.timer" % (UNIT_DIR, job))
    assert link.is_symlink and link.linked_to == timer.path


def test_systemd_analyze_verify(host):
    units = ["%s/idp-recovery-%s.%s" % (UNIT_DIR, job, kind) for job in JOBS for kind in ("service", "timer")]
    result = host.run("systemd-analyze verify --man=no " + " ".join(units))
    assert result.rc == 0 and result.stdout == "" and result.stderr == "", result.stderr


def test_systemd_analyze_verify_rejects_a_broken_unit(host):
    """The check above can fail: systemd-analyze verify reports a calendar it cannot parse."""
    broken = "/tmp/idp-molecule-broken"
    host.check_output(
        "rm -rf {d} && mkdir {d} && cp {u}/idp-recovery-backup.service {u}/idp-recovery-backup.timer {d}/"
        " && sed -i 's/^OnCalendar=.*/OnCalendar=every other tuesday/' {d}/idp-recovery-backup.timer".format(d=broken, u=UNIT_DIR)
    )
    result = host.run("systemd-analyze verify --man=no %s/idp-recovery-backup.service %s/idp-recovery-backup.timer", broken, broken)
    host.run("rm -rf %s", broken)
    assert result.rc != 0, result.stderr
    assert "Failed to parse calendar specification" in result.stderr, result.stderr


def test_hardening_exposure(host):
    """systemd's own exposure score of the backup service (lower is better), printed for the record."""
    result = host.run("systemd-analyze security --offline=yes --no-pager %s/idp-recovery-backup.service", UNIT_DIR)
    overall = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\S+)", result.stdout)
    assert overall, result.stdout + result.stderr
    print("exposure: %s %s" % overall.groups())
    # 1.8 ("OK") with systemd 252; 5.0 and above is what systemd calls MEDIUM
    assert float(overall.group(1)) < 3.0, result.stdout


def test_no_cron_file(host):
    assert not host.file("/etc/cron.d/idp-recovery").exists
