# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Check what `ansible-playbook idp.recovery.backup` left behind, then break the offsite target.

The sets are read with stock tools (`sha256sum -c`, `age -d`, `zstd -d`, `pg_restore --list`),
the status file as JSON, the Prometheus textfile with a strict parser of the text exposition
format. The failure case runs the playbook again with an offsite target nobody listens on.
"""

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import testinfra.utils.ansible_runner

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
import authentik_support  # noqa: E402  pylint: disable=wrong-import-position

testinfra_hosts = ["local://"]

RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"])
METRICS = (
    "idp_recovery_backup_last_success_timestamp_seconds",
    "idp_recovery_backup_duration_seconds",
    "idp_recovery_backup_size_bytes",
    "idp_recovery_backup_result",
)
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*)\} (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"')


@pytest.fixture(scope="module")
def settings():
    return RUNNER.get_variables(RUNNER.get_hosts("backup_database")[0])


def parse_textfile(text):
    """{metric: {(service, kind): value}} from a textfile; fails on anything the collector would reject."""
    assert text.endswith("\n"), "the textfile must end with a newline"
    types, helps, samples = {}, {}, {}
    seen = set()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith("# HELP "):
            name, _sep, doc = line[7:].partition(" ")
            assert name not in helps and doc, "line %d: HELP twice or empty" % number
            helps[name] = doc
        elif line.startswith("# TYPE "):
            name, _sep, kind = line[7:].partition(" ")
            assert kind in ("gauge", "counter", "untyped"), "line %d: type %r" % (number, kind)
            assert name not in types and name not in samples, "line %d: TYPE after samples or twice" % number
            types[name] = kind
        elif line.startswith("#"):
            continue
        else:
            match = SAMPLE.match(line)
            assert match, "line %d is not a sample: %r" % (number, line)
            name, labels, value = match.groups()
            assert name in types, "line %d: sample of %s before its TYPE" % (number, name)
            parsed = dict(LABEL.findall(labels))
            key = (name, tuple(sorted(parsed.items())))
            assert key not in seen, "line %d: duplicate series %r" % (number, key)
            seen.add(key)
            samples.setdefault(name, {})[(parsed["service"], parsed["kind"])] = float(value)
    assert set(types) == set(helps) == set(METRICS)
    return samples


def read_status(directory):
    path = Path(directory) / "last-backup.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return json.loads(path.read_text(encoding="utf-8"))


def read_metrics(directory):
    path = Path(directory) / "idp_recovery_backup.prom"
    leftovers = [p.name for p in Path(directory).iterdir() if p.name != path.name]
    assert leftovers == [], "temporary files left beside the textfile: %r" % leftovers
    return parse_textfile(path.read_text(encoding="utf-8"))


def sets_of(root, service):
    return sorted(p for p in (Path(root) / service).iterdir() if p.is_dir())


def sha256_check(set_dir):
    return subprocess.run(["sha256sum", "--quiet", "-c", "MANIFEST.sha256"], cwd=str(set_dir),
                          capture_output=True, text=True, check=False)


def test_status_file_reports_both_services(settings):
    status = read_status(settings["backup_status_dir"])
    assert status["result"] == "ok"
    assert set(status["services"]) == {"authentik", "billing"}
    for name, entry in status["services"].items():
        assert entry["result"] == "ok" and entry["local"] == "ok" and entry["offsite"] == "ok", entry
        assert entry["retention"] == "ok"
        assert entry["size_bytes"] > 0
        assert entry["last_success"] == entry["finished"]
        assert entry["duration_seconds"] > 0
        assert Path(entry["set"]).parent.name == name
    assert status["size_bytes"] == sum(e["size_bytes"] for e in status["services"].values())


def test_status_counts_are_the_databases_counts(settings):
    status = read_status(settings["backup_status_dir"])
    container = settings["idp_backup_postgres"]
    authentik = authentik_support.table_counts(container)
    billing = authentik_support.table_counts(container, database="billing")
    assert billing == {"public.invoice": int(settings["idp_backup_billing_rows"]), "audit.event": 50}
    assert status["services"]["authentik"]["counts"] == {"tables": len(authentik), "rows": sum(authentik.values())}
    assert status["services"]["billing"]["counts"] == {"tables": 2, "rows": sum(billing.values())}


def test_metrics_textfile_parses_and_matches_the_status(settings):
    status = read_status(settings["backup_status_dir"])
    metrics = read_metrics(settings["backup_metrics_dir"])
    for name, entry in status["services"].items():
        key = (name, entry["kind"])
        assert metrics["idp_recovery_backup_result"][key] == 1
        assert metrics["idp_recovery_backup_size_bytes"][key] == entry["size_bytes"]
        assert metrics["idp_recovery_backup_duration_seconds"][key] == pytest.approx(entry["duration_seconds"], abs=0.001)
        assert metrics["idp_recovery_backup_last_success_timestamp_seconds"][key] == pytest.approx(entry["last_success"],
                                                                                                   abs=0.001)


def test_each_set_is_complete_with_a_valid_manifest(settings):
    status = read_status(settings["backup_status_dir"])
    for name in ("authentik", "billing"):
        found = sets_of(settings["backup_root"], name)
        assert found == [Path(status["services"][name]["set"])]
        set_dir = found[0]
        assert not (set_dir / ".in-progress").exists()
        assert stat.S_IMODE(set_dir.stat().st_mode) == 0o700
        checked = sha256_check(set_dir)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        listed = [line[66:] for line in (set_dir / "MANIFEST.sha256").read_text(encoding="utf-8").splitlines()]
        assert "metadata.json" in listed and "database.pgdump.zst.age" in listed
        on_disk = sorted(str(p.relative_to(set_dir)) for p in set_dir.rglob("*") if p.is_file()
                         and p.name != "MANIFEST.sha256")
        assert sorted(listed) == on_disk
        metadata = json.loads((set_dir / "metadata.json").read_text(encoding="utf-8"))
        assert metadata["environment"] == "molecule"
        assert metadata["origin"]["role"] == "idp.recovery.backup"
    authentik = sets_of(settings["backup_root"], "authentik")[0]
    listed = (authentik / "MANIFEST.sha256").read_text(encoding="utf-8")
    assert "dotenv.age" in listed and "files/data.tar.zst.age" in listed


def test_the_generic_database_restores_with_stock_tools(settings):
    set_dir = sets_of(settings["backup_root"], "billing")[0]
    metadata = json.loads((set_dir / "metadata.json").read_text(encoding="utf-8"))
    assert metadata["postgres"]["database"]["tables"] == {"public.invoice": int(settings["idp_backup_billing_rows"]),
                                                          "audit.event": 50}
    assert "authentik" not in metadata
    listing = subprocess.run(
        ["bash", "-euo", "pipefail", "-c",
         'age -d -i "$1" "$2" | zstd -dc | docker exec -i "$3" sh -c "pg_restore --list && cat > /dev/null"',
         "bash", settings["idp_backup_identity"], str(set_dir / "database.pgdump.zst.age"), settings["idp_backup_postgres"]],
        capture_output=True, text=True, check=True).stdout
    assert " TABLE DATA public invoice " in listing and " TABLE DATA audit event " in listing


def test_the_offsite_copies_match_the_local_sets(settings):
    for name in ("authentik", "billing"):
        local = sets_of(settings["backup_root"], name)[0]
        remote = Path(settings["backup_offsite"]["target"]) / name / local.name
        assert (remote / "MANIFEST.sha256").read_bytes() == (local / "MANIFEST.sha256").read_bytes()
        checked = sha256_check(remote)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def run_playbook(*args):
    # never colour codes in what is read, whatever terminal molecule itself runs in
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    return subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], "-e", "idp_backup_hosts=localhost"]
        + list(args) + ["idp.recovery.backup"],
        capture_output=True, text=True, check=False, timeout=600, env=env)


def test_check_mode_shows_the_plan_and_changes_nothing(settings):
    status = Path(settings["backup_status_dir"]) / "last-backup.json"
    before = {name: sets_of(settings["backup_root"], name) for name in ("authentik", "billing")}
    stamp = status.stat().st_mtime_ns
    proc = run_playbook("--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    output = " ".join(proc.stdout.split())
    assert "billing (postgres): a new set under " in output
    assert {name: sets_of(settings["backup_root"], name) for name in ("authentik", "billing")} == before
    assert status.stat().st_mtime_ns == stamp


class PingRecorder(BaseHTTPRequestHandler):
    """A healthchecks-style endpoint that records the paths it was asked for."""

    seen = []

    def do_GET(self):  # noqa: N802  (the name http.server calls)
        self.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        pass


def _closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def failed_run(settings):
    """Run the playbook again with an S3 offsite target on a port nobody listens on."""
    ephemeral = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
    work = ephemeral / "failure"
    work.mkdir(mode=0o700, exist_ok=True)
    before = {name: sets_of(settings["backup_root"], name) for name in ("authentik", "billing")}
    status_before = read_status(settings["backup_status_dir"])
    PingRecorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), PingRecorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    overrides = {
        "backup_offsite": {
            "backend": "rclone",
            "target": "unreachable:idp-backups",
            "rclone_binary": shutil.which("rclone") or str(ROOT / ".venv" / "bin" / "rclone"),
            "rclone_remote_type": "s3",
            "rclone_remote_options": {"provider": "Other", "endpoint": "http://127.0.0.1:%d" % _closed_port(),
                                      "access_key_id": "molecule", "secret_access_key": "molecule-secret"},
            "retries": 1,
            "retry_delay": 0.5,
            "timeout": 5,
        },
        "backup_retention_offsite": False,
        "backup_ping_start_url": "http://127.0.0.1:%d/ping/start" % server.server_address[1],
        "backup_ping_success_url": "http://127.0.0.1:%d/ping" % server.server_address[1],
        "backup_ping_fail_url": "http://127.0.0.1:%d/ping/fail" % server.server_address[1],
    }
    extra = work / "overrides.json"
    extra.write_text(json.dumps(overrides), encoding="utf-8")
    extra.chmod(0o600)
    try:
        proc = run_playbook("-e", "@" + str(extra))
    finally:
        server.shutdown()
        server.server_close()
    return {"proc": proc, "before": before, "status_before": status_before, "pings": list(PingRecorder.seen)}


def test_the_play_fails_when_the_offsite_target_is_unreachable(failed_run):
    proc = failed_run["proc"]
    assert proc.returncode != 0, proc.stdout
    # line wrapping of the callback does not matter here (colour is off, see run_playbook)
    output = " ".join((proc.stdout + proc.stderr).split())
    for name in ("authentik", "billing"):
        assert re.search(name + r": the local set \S+/" + name + r"/\d{8}T\d{6}Z is complete and verified, "
                         r"so the data is safe locally; the offsite copy failed: ", output), output[-3000:]


def test_the_start_and_fail_urls_were_pinged(failed_run):
    assert failed_run["pings"] == ["/ping/start", "/ping/fail"]


def test_the_new_local_sets_are_complete_and_the_old_ones_untouched(settings, failed_run):
    status = read_status(settings["backup_status_dir"])
    for name in ("authentik", "billing"):
        now = sets_of(settings["backup_root"], name)
        before = failed_run["before"][name]
        assert now[:len(before)] == before and len(now) == len(before) + 1
        new = now[-1]
        assert str(new) == status["services"][name]["set"]
        checked = sha256_check(new)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert not (new / ".in-progress").exists()
        for old in before:
            assert sha256_check(old).returncode == 0


def test_the_status_says_local_ok_offsite_failed(settings, failed_run):
    status = read_status(settings["backup_status_dir"])
    assert status["result"] == "failed"
    for name, entry in status["services"].items():
        assert entry["local"] == "ok" and entry["offsite"] == "failed" and entry["result"] == "failed", entry
        assert entry["offsite_message"]
        # the last success is still the previous run's
        assert entry["last_success"] == failed_run["status_before"]["services"][name]["last_success"]
        assert entry["size_bytes"] > 0


def test_the_metrics_say_failed_with_the_previous_success(settings, failed_run):
    status = read_status(settings["backup_status_dir"])
    metrics = read_metrics(settings["backup_metrics_dir"])
    for name, entry in status["services"].items():
        key = (name, entry["kind"])
        assert metrics["idp_recovery_backup_result"][key] == 0
        assert metrics["idp_recovery_backup_size_bytes"][key] == entry["size_bytes"]
        previous = failed_run["status_before"]["services"][name]["last_success"]
        assert metrics["idp_recovery_backup_last_success_timestamp_seconds"][key] == pytest.approx(previous, abs=0.001)


def test_an_ory_service_through_the_role(settings):
    """kind: ory against the Ory admin API stand-in (tests/ory_standin, Ory's OpenAPI contract)."""
    import ory_support  # pylint: disable=import-outside-toplevel

    work = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "ory-run"
    work.mkdir(mode=0o700, exist_ok=True)
    standin = ory_support.start_standin(work / "standin", seed_identities=40, seed_clients=2, default_jwk_sets=True)
    try:
        overrides = {
            "backup_root": str(work / "backups"),
            "backup_status_dir": str(work / "status"),
            "backup_metrics_dir": str(work / "metrics"),
            "backup_offsite_enabled": False,
            "backup_retention_enabled": False,
            "backup_services": [dict(standin.connection(), name="ory-project", kind="ory")],
        }
        extra = work / "overrides.json"
        extra.write_text(json.dumps(overrides), encoding="utf-8")
        extra.chmod(0o600)
        proc = run_playbook("-e", "@" + str(extra))
        summary = standin.summary()
    finally:
        standin.stop()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    output = proc.stdout + proc.stderr
    assert standin.api_key not in output and standin.workspace_key not in output
    status = read_status(work / "status")
    entry = status["services"]["ory-project"]
    assert entry["result"] == "ok" and entry["offsite"] == "skipped", entry
    assert entry["counts"]["identities"] == 40 == summary["identities"]
    assert entry["counts"]["oauth2_clients"] == 2
    assert entry["counts"]["relationships"] == summary["tuples"]
    set_dir = Path(entry["set"])
    checked = sha256_check(set_dir)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert read_metrics(work / "metrics")["idp_recovery_backup_result"][("ory-project", "ory")] == 1
    for secret in (standin.api_key, standin.workspace_key):
        found = subprocess.run(["grep", "-r", "-l", "-F", "-e", secret, str(work / "backups"), str(work / "status")],
                               capture_output=True, text=True, check=False)
        assert found.returncode == 1, "a key is readable in %s" % found.stdout
