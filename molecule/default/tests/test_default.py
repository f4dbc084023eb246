# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Check the full cycle: the status file and metrics of the backup, the offsite copies on the S3
endpoint, the drill's JSON and HTML reports and metrics, the failed drill, and that nothing the
drill used is left behind.

The checks run on the controller (the Docker host), like the playbooks did.
"""

import html.parser
import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
import testinfra.utils.ansible_runner

testinfra_hosts = ["local://"]

RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"])
SERVICES = ("authentik", "kratos")


@pytest.fixture(scope="module")
def settings():
    return RUNNER.get_variables(RUNNER.get_hosts("all")[0])


@pytest.fixture(scope="module")
def demo(settings):
    return Path(settings["idp_demo_dir"])


@pytest.fixture(scope="module")
def state(settings):
    return Path(settings["idp_default_state"])


@pytest.fixture(scope="module")
def outcome(state):
    return json.loads((state / "outcome.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def status(demo):
    return json.loads((demo / "status" / "last-backup.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def report(demo):
    return json.loads((demo / "drills" / "latest.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def missed(demo):
    return json.loads((demo / "drills-missed" / "latest.json").read_text(encoding="utf-8"))


def metrics(path):
    """{(name, frozenset(labels)): value} of a Prometheus text file."""
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$', line)
        assert match, "not a sample line: %r" % line
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        found[(match.group(1), labels)] = float(match.group(3))
    return found


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_the_runs_ended_as_expected(outcome, state):
    assert outcome["backup"] == 0, (state / "backup.log").read_text(encoding="utf-8")[-3000:]
    assert outcome["drill"] == 0, (state / "drill.log").read_text(encoding="utf-8")[-3000:]
    assert outcome["drill-missed"] != 0


def test_the_status_file_records_both_services(demo, status):
    path = demo / "status" / "last-backup.json"
    assert mode(path) == 0o600
    assert status["result"] == "ok"
    services = status["services"]
    assert sorted(services) == sorted(SERVICES)
    for name in SERVICES:
        item = services[name]
        assert item["result"] == "ok", item
        assert item["local"] == "ok"
        assert item["offsite"] == "ok", item
        assert item["size_bytes"] > 0
        assert Path(item["set"], "MANIFEST.sha256").is_file()
    assert services["authentik"]["counts"]["rows"] > 1000
    assert services["kratos"]["counts"]["rows"] == 4000


def test_the_backup_metrics_say_success(demo, status):
    found = metrics(demo / "metrics" / "idp_recovery_backup.prom")
    for name in SERVICES:
        labels = [key for key in found if key[0] == "idp_recovery_backup_last_success_timestamp_seconds"
                  and ("service", name) in key[1]]
        assert labels, "no last-success metric for %s" % name
        assert found[labels[0]] > 1.7e9


def test_the_offsite_copies_are_complete(demo, status):
    for item in status["services"].values():
        stamp = Path(item["set"]).name
        remote = demo / "s3" / "idp-offsite" / "demo" / item["name"] / stamp
        assert (remote / "MANIFEST.sha256").is_file(), remote
        local = sorted(p.name for p in Path(item["set"]).iterdir() if p.is_file())
        assert sorted(p.name for p in remote.iterdir() if p.is_file()) == local


def test_the_drill_passed_from_the_offsite_copies(report, status):
    assert report["result"] == "passed", report.get("reasons")
    services = {item["name"]: item for item in report["services"]}
    assert sorted(services) == sorted(SERVICES)
    stamps = {name: Path(item["set"]).name for name, item in status["services"].items()}
    for name in SERVICES:
        item = services[name]
        assert item["stamp"] == stamps[name]
        assert item["source"].startswith("offsite:") or "s3" in item["source"], item["source"]
        names = [step["name"] for step in item["steps"]]
        assert names[:2] == ["fetch", "verify"], names
        assert "restore" in names and "checks" in names, names
        assert all(step.get("ok", True) for step in item["steps"])
        assert item["target"].startswith("scratch container")
        kinds = {check["kind"] for check in item["checks"]}
        assert {"verify", "row_counts", "sql"} <= kinds, kinds
        assert all(check["ok"] for check in item["checks"]), item["checks"]


def test_the_authentik_drill_checked_version_and_staging_health(report):
    item = [s for s in report["services"] if s["name"] == "authentik"][0]
    checks = {check["kind"]: check for check in item["checks"]}
    assert checks["version"]["actual"] == "2025.10.1"
    assert checks["http"]["ok"] and checks["http"]["actual"] == 200


def test_the_report_measured_recovery_time_and_data_loss(report):
    assert report["rto_target_seconds"] == 4 * 3600
    assert report["rpo_target_seconds"] == 24 * 3600
    for item in report["services"]:
        assert 0 < item["rto_seconds"] < report["rto_target_seconds"]
        assert 0 <= item["rpo_seconds"] < report["rpo_target_seconds"]
        assert abs(item["rto_seconds"] - sum(step["seconds"] for step in item["steps"])) < 0.01


class _Collect(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []
        self.urls = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.urls.append(value)


def test_the_html_report_is_self_contained(demo, report):
    page = demo / "drills" / "latest.html"
    assert mode(page) == 0o600
    assert mode(demo / "drills") == 0o700
    text = page.read_text(encoding="utf-8")
    parser = _Collect()
    parser.feed(text)
    parser.close()
    assert "svg" in parser.tags and "table" in parser.tags
    assert "script" not in parser.tags
    assert [url for url in parser.urls if not url.startswith("#")] == []
    assert "PASSED" in text
    for name in SERVICES:
        assert name in text


def test_the_missed_target_failed_the_drill_and_says_why(demo, state, missed):
    log = (state / "drill-missed.log").read_text(encoding="utf-8")
    assert "DRILL FAILED" in log
    assert missed["result"] == "failed"
    assert any("target" in reason for reason in missed["reasons"]), missed["reasons"]
    assert all(not item["rpo_ok"] for item in missed["services"]) if "rpo_ok" in missed["services"][0] else True


def test_the_drill_metrics_keep_the_last_success(demo, report):
    found = metrics(demo / "metrics" / "idp_recovery_drill.prom")
    assert found[("idp_recovery_drill_success", frozenset())] == 0
    last = found[("idp_recovery_drill_last_success_timestamp_seconds", frozenset())]
    assert last > 1.7e9


def test_nothing_of_the_drill_is_left_behind(demo, settings):
    prefix = settings["idp_demo_prefix"]
    left = subprocess.run(
        ["docker", "ps", "--all", "--filter", "label=io.idp-recovery.scratch=true", "--format", "{{.Names}}"],
        check=True, capture_output=True, text=True).stdout.split()
    assert [name for name in left if name.startswith(prefix)] == []
    work = demo / "drill-work"
    sets = [p for p in work.glob("*/*") if p.is_dir()] if work.is_dir() else []
    assert sets == []
