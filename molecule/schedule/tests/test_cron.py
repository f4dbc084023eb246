# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Check the cron fallback of the schedule role: the /etc/cron.d file, and its lines run here as
cron runs them, against the ansible-playbook stand-in of prepare.yml."""

import json
import os
import re

import pytest
import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("schedule_cron")

JOBS = {
    # name: (playbook, cron schedule); the drill is disabled on this host
    "backup": ("idp.recovery.backup", "0 */6 * * *"),
    "offsite": ("idp.recovery.backup", "30 2 * * *"),
}
QUOTING = "100% $HOME \"quoted\" 'single' back\\slash"
AS_CRON = "env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin runuser -u idp-recovery -- "


@pytest.fixture(scope="module")
def settings(host):
    return host.ansible.get_variables()


def cron_lines(host):
    """The job lines of the cron file by job name (each follows its `#Ansible: <name>` line)."""
    lines = host.file("/etc/cron.d/idp-recovery").content_string.splitlines()
    found = {}
    for marker, line in zip(lines, lines[1:]):
        m = re.match(r"^#Ansible: idp-recovery-(\w+)$", marker)
        if m:
            found[m.group(1)] = line
    return found


def test_user_and_directories(host):
    user = host.user("idp-recovery")
    assert user.exists and user.group == "idp-recovery" and user.shell == "/usr/sbin/nologin"
    for path in ("/var/lib/idp-recovery", "/var/backups/idp", "/var/log/idp-recovery"):
        d = host.file(path)
        assert d.is_directory and d.user == "idp-recovery" and d.group == "idp-recovery" and d.mode == 0o700, path


def test_job_settings(host):
    conf = host.file("/etc/idp-recovery/schedule")
    assert sorted(conf.listdir()) == ["backup.json", "offsite.json"]
    assert json.loads(host.file("/etc/idp-recovery/schedule/backup.json").content_string) == {"backup_offsite_enabled": False}
    assert json.loads(host.file("/etc/idp-recovery/schedule/offsite.json").content_string) == {"molecule_offsite": True}


def test_cron_file(host):
    f = host.file("/etc/cron.d/idp-recovery")
    assert f.is_file and f.user == "root" and f.mode == 0o644
    lines = cron_lines(host)
    assert sorted(lines) == sorted(JOBS)
    for job, line in lines.items():
        assert line.startswith("%s idp-recovery umask 077; " % JOBS[job][1]), line
        # cron turns every unescaped % into a new line
        assert re.search(r"(?<!\\)%", line) is None, line


def test_no_units(host):
    for job in ("backup", "offsite", "drill"):
        for kind in ("service", "timer"):
            assert not host.file("/etc/systemd/system/idp-recovery-%s.%s" % (job, kind)).exists


@pytest.mark.parametrize("job", sorted(JOBS))
def test_cron_line_runs(host, settings, job):
    """Run the command of a cron line as cron does (its user, /bin/sh, an empty environment,
    \\% turned into %) and check what the ansible-playbook stand-in recorded."""
    command = cron_lines(host)[job].split(" ", 6)[6].replace("\\%", "%")
    runs = settings["idp_molecule_runs"]
    host.check_output("rm -f %s", runs)
    result = host.run(AS_CRON + "/bin/sh -c %s", command)
    assert result.rc == 0, result.stderr
    values = {}
    for entry in host.file(runs).content_string.splitlines():
        name, value = entry.split("=", 1)
        values.setdefault(name, []).append(value)
    assert values["user"] == ["idp-recovery"]
    assert values["umask"] == ["0077"]
    assert values["home"] == ["/var/lib/idp-recovery"]
    assert values["quoting"] == [QUOTING]
    assert values["arg"] == [
        "--inventory", settings["schedule_inventory"],
        "--extra-vars=@/etc/idp-recovery/site.yml",
        "--extra-vars=@/etc/idp-recovery/schedule/%s.json" % job,
        JOBS[job][0],
    ]
    assert sorted(values["readable"]) == sorted(
        ["/etc/idp-recovery/site.yml", "/etc/idp-recovery/schedule/%s.json" % job, settings["schedule_inventory"]]
    )


@pytest.mark.parametrize("job", sorted(JOBS))
def test_cron_line_skips_while_a_run_holds_the_lock(host, settings, job):
    command = cron_lines(host)[job].split(" ", 6)[6].replace("\\%", "%")
    runs = settings["idp_molecule_runs"]
    host.check_output("rm -f %s", runs)
    held = host.run(
        AS_CRON + "flock /var/lib/idp-recovery/%s.lock /bin/sh -c %s", job, command + "; echo rc=$?",
    )
    assert held.stdout.strip() == "rc=1", held.stdout + held.stderr
    assert not host.file(runs).exists
