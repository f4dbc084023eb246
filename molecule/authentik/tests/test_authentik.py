# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Check the restored Authentik deployment against what prepare.yml recorded before the backup.

The checks run on the controller (the Docker host), like the modules did: the database through
`docker exec`, the files in the deployment directory, the health endpoints over the scenario's
network. The set is read with stock tools only (`sha256sum -c`, `age -d`, `zstd -d`,
`pg_restore --list`): it must stand on its own in an emergency.
"""

import json
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import testinfra.utils.ansible_runner

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
import authentik_support  # noqa: E402  pylint: disable=wrong-import-position

testinfra_hosts = ["local://"]

RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"])
PAYLOADS = (
    "database.pgdump.zst.age",
    "files/data.tar.zst.age",
    "files/custom-templates.tar.zst.age",
    "files/certs.tar.zst.age",
    "files/blueprints.tar.zst.age",
    "dotenv.age",
)


@pytest.fixture(scope="module")
def settings():
    database_host = RUNNER.get_hosts("authentik_database")[0]
    return RUNNER.get_variables(database_host)


@pytest.fixture(scope="module")
def recorded(settings):
    state = Path(settings["idp_authentik_state"])
    return {name: json.loads((state / (name + ".json")).read_text(encoding="utf-8"))
            for name in ("counts", "files", "restore")}


@pytest.fixture(scope="module")
def backup_set(settings):
    service_dir = Path(settings["idp_authentik_backup_root"]) / settings["idp_authentik_service"]
    found = sorted(p for p in service_dir.iterdir() if p.is_dir())
    assert len(found) == 1, "expected exactly one set in %s, found %r" % (service_dir, found)
    return found[0]


@pytest.fixture(scope="module")
def metadata(backup_set):
    return json.loads((backup_set / "metadata.json").read_text(encoding="utf-8"))


def sql(settings, query):
    return authentik_support.psql(settings["idp_authentik_postgres"], query).strip()


def pipeline(host, script, *args):
    """Run a bash pipeline (pipefail) on the controller; return its stdout."""
    return host.check_output("bash -euo pipefail -c %s bash" + " %s" * len(args), script, *args)


def test_fixture_is_what_the_scenario_describes(settings, recorded):
    counts = recorded["counts"]
    assert counts.get("public.authentik_core_user", 0) > 0
    if settings["idp_authentik_fixture"] == "authentik-shaped":
        users = int(settings["idp_authentik_users"])
        assert counts["public.authentik_core_user"] == users
        assert counts["t_acme.authentik_core_user"] == users // 10
        for table in authentik_support.KEY_TABLES:
            assert counts["public." + table] > 0, table
        assert counts["public.authentik_version_history"] > 1


def test_every_row_is_back(settings, recorded):
    now = authentik_support.table_counts(settings["idp_authentik_postgres"])
    assert now == recorded["counts"]


def test_the_metadata_holds_the_counts_of_the_snapshot(metadata, recorded):
    database = metadata["authentik"]["database"]
    assert database["tables"] == recorded["counts"]
    assert database["rows_total"] == sum(recorded["counts"].values())
    assert database["format"] == "custom"
    assert database["payload"] == "database.pgdump.zst.age"


def test_the_metadata_holds_versions_and_migrations(settings, metadata):
    authentik = metadata["authentik"]
    assert authentik["version"]["version"] == settings["idp_authentik_version"]
    assert authentik["migrations"] == authentik_support.migration_heads(settings["idp_authentik_postgres"])
    assert authentik["database"]["server_version"] == sql(settings, "SHOW server_version")
    assert authentik["database"]["size"] > 0
    if settings["idp_authentik_fixture"] == "authentik-shaped":
        assert authentik["database"]["schemas"] == ["public", authentik_support.TENANT_SCHEMA]


def test_the_version_history_gained_no_row(settings):
    version, _build = authentik_support.newest_version(settings["idp_authentik_postgres"])
    assert version == settings["idp_authentik_version"]


def test_the_set_is_complete_and_private(host, backup_set):
    assert not (backup_set / ".in-progress").exists()
    assert oct(backup_set.stat().st_mode & 0o777) == "0o700"
    listed = pipeline(host, 'cd "$1" && sha256sum --quiet -c MANIFEST.sha256 && cut -c67- MANIFEST.sha256',
                      str(backup_set)).split()
    for name in PAYLOADS + ("metadata.json",):
        assert name in listed
        assert oct((backup_set / name).stat().st_mode & 0o777) == "0o600", name


def test_the_database_payload_restores_with_stock_tools(host, settings, backup_set):
    listing = pipeline(
        host,
        # pg_restore --list reads only the table of contents: drain the rest for pipefail
        'age -d -i "$1" "$2" | zstd -dc | docker exec -i "$3" sh -c "pg_restore --list && cat > /dev/null"',
        settings["idp_authentik_identity"], str(backup_set / "database.pgdump.zst.age"),
        settings["idp_authentik_postgres"])
    assert " TABLE DATA public authentik_core_user " in listing
    if settings["idp_authentik_fixture"] == "authentik-shaped":
        assert " TABLE DATA t_acme authentik_core_user " in listing
        assert " TABLE DATA public authentik_version_history " in listing


def test_the_files_are_back_unchanged(settings, recorded):
    assert authentik_support.snapshot(settings["idp_authentik_compose_dir"]) == recorded["files"]


def test_the_env_is_back_and_only_encrypted_in_the_set(host, settings, backup_set):
    env_file = Path(settings["idp_authentik_compose_dir"]) / ".env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    secret = [line.split("=", 1)[1] for line in env_file.read_text(encoding="utf-8").splitlines()
              if line.startswith("AUTHENTIK_SECRET_KEY=")][0]
    decrypted = pipeline(host, 'age -d -i "$1" "$2"', settings["idp_authentik_identity"],
                         str(backup_set / "dotenv.age"))
    # (check_output drops the final newline)
    assert decrypted == env_file.read_text(encoding="utf-8").rstrip("\n")
    found = host.run("grep -r -l -F -e %s %s", secret, settings["idp_authentik_backup_root"])
    assert found.rc == 1, "the secret key is readable in %s" % found.stdout


def test_the_restore_reported_its_steps(recorded):
    restore = recorded["restore"]
    assert restore["steps"], "no steps"
    for step in restore["steps"]:
        assert step["name"] and step["seconds"] >= 0
    assert restore["recovery_seconds"] > 0
    assert restore["tables"]["mismatched"] == []
    assert restore["tables"]["checked"] == len(recorded["counts"])


def test_the_safety_set_is_complete(recorded):
    safety = Path(recorded["restore"]["safety_set"])
    assert (safety / "MANIFEST.sha256").is_file()
    assert not (safety / ".in-progress").exists()


def test_no_decrypted_dump_is_left_in_the_database_container(host, settings):
    leftovers = host.check_output("docker exec %s find /tmp /var/tmp -mindepth 1 -maxdepth 1",
                                  settings["idp_authentik_postgres"])
    assert leftovers.strip() == ""


def _status(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_server_is_live_and_ready(settings):
    address = authentik_support.container_ip(settings["idp_authentik_server"], settings["idp_authentik_network"])
    assert _status("http://%s:9000/-/health/live/" % address) == 200
    assert _status("http://%s:9000/-/health/ready/" % address) == 200


def test_the_worker_is_healthy(host, settings):
    worker = settings["idp_authentik_worker"]
    assert host.run("docker exec %s ak healthcheck", worker).rc == 0
    # the image's HEALTHCHECK runs every 10 s: wait for its verdict, up to a minute
    deadline = time.monotonic() + 60
    status = ""
    while time.monotonic() < deadline:
        status = host.check_output("docker inspect -f %s %s", "{{ .State.Health.Status }}", worker).strip()
        if status != "starting":
            break
        time.sleep(2)
    assert status == "healthy", shlex.quote(status)


GATE_SCHEMA = """
CREATE TABLE authentik_version_history (
    id integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    "timestamp" timestamptz NOT NULL, version text NOT NULL, build text NOT NULL);
CREATE TABLE authentik_core_user (id serial PRIMARY KEY);
INSERT INTO authentik_version_history ("timestamp", version, build) VALUES (now(), :'version', 'gate-check');
"""


@pytest.mark.parametrize("version, reason", [("2026.2.1", "newer than this authentik"),
                                             ("2025.4.1", "upgrade through the releases in between")])
def test_the_server_refuses_a_database_of_another_release_line(settings, version, reason):
    """The contract the restore's version gate protects: Authentik does not start on a database
    of a newer line, or of a line older than the previous one."""
    image = subprocess.check_output(["docker", "inspect", "-f", "{{ .Config.Image }}", settings["idp_authentik_server"]],
                                    text=True).strip()
    labels = json.loads(subprocess.check_output(["docker", "image", "inspect", "-f", "{{ json .Config.Labels }}", image],
                                                text=True)) or {}
    if labels.get(authentik_support.STANDIN_LABEL) != "authentik":
        pytest.skip("only the stand-in is started against a hand-made database (image %s)" % image)
    postgres = settings["idp_authentik_postgres"]
    database = "gate_check_" + version.replace(".", "_")
    subprocess.run(["docker", "exec", postgres, "createdb", "-U", "authentik", database], check=True)
    try:
        authentik_support.psql(postgres, GATE_SCHEMA, database=database, variables={"version": version})
        proc = subprocess.run(
            ["timeout", "120", "docker", "run", "--rm", "--network", settings["idp_authentik_network"],
             "-e", "AUTHENTIK_POSTGRESQL__HOST=" + postgres, "-e", "AUTHENTIK_POSTGRESQL__NAME=" + database,
             "-e", "AUTHENTIK_POSTGRESQL__USER=authentik", "-e", "AUTHENTIK_POSTGRESQL__PASSWORD",
             image, "server"],
            env=dict(os.environ, AUTHENTIK_POSTGRESQL__PASSWORD=settings["idp_authentik_db_password"]),
            capture_output=True, text=True, check=False)
    finally:
        subprocess.run(["docker", "exec", postgres, "dropdb", "-U", "authentik", "--force", database],
                       capture_output=True, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "refusing to start" in proc.stderr and reason in proc.stderr
