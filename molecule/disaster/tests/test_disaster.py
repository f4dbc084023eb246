# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Check the outcome of the disaster: the refused run changed nothing, the confirmed run restored
every row that the backup recorded, and the app stand-ins are healthy on the restored database.

The checks run on the controller (the Docker host), like the playbook did.
"""

import json
import os
import sys
from pathlib import Path

import pytest
import testinfra.utils.ansible_runner

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
import authentik_support  # noqa: E402  pylint: disable=wrong-import-position

testinfra_hosts = ["local://"]

RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"])


@pytest.fixture(scope="module")
def settings():
    return RUNNER.get_variables(RUNNER.get_hosts("disaster_database")[0])


@pytest.fixture(scope="module")
def state(settings):
    return Path(settings["idp_disaster_state"])


@pytest.fixture(scope="module")
def outcome(state):
    return json.loads((state / "outcome.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def backup_set(settings):
    service_dir = Path(settings["idp_disaster_backup_root"]) / settings["idp_disaster_service"]
    found = sorted(p for p in service_dir.iterdir() if p.is_dir())
    assert len(found) == 1, "expected exactly one set in %s, found %r" % (service_dir, found)
    return found[0]


@pytest.fixture(scope="module")
def metadata(backup_set):
    return json.loads((backup_set / "metadata.json").read_text(encoding="utf-8"))


def test_the_unconfirmed_run_failed_after_the_plan(state, outcome):
    log = (state / "unconfirmed.log").read_text(encoding="utf-8")
    assert outcome["unconfirmed_rc"] != 0
    plan_at = log.index("RESTORE PLAN (Authentik)")
    refusal_at = log.index("restore NOT CONFIRMED")
    assert log.index("verified ") < plan_at < refusal_at
    assert "RESTORED" not in log
    assert "restore_confirm=true" in log[refusal_at:]


def test_the_unconfirmed_run_changed_nothing(outcome):
    assert outcome["users_tables_after_refusal"] == 0
    assert outcome["apps_running_after_refusal"] == [True, True]


def test_the_confirmed_run_reported_steps_and_recovery_time(state, outcome):
    log = (state / "confirmed.log").read_text(encoding="utf-8")
    assert outcome["confirmed_rc"] == 0
    assert "restore NOT CONFIRMED" not in log
    for step in ("verify", "stop_apps", "safety_backup", "recreate_database", "restore_database",
                 "compare_counts", "start_apps", "health"):
        assert "%s: " % step in log, step
    assert "recovery time: " in log


def test_every_row_count_equals_the_backup_metadata(settings, metadata):
    now = authentik_support.table_counts(settings["idp_disaster_postgres"])
    assert now == metadata["authentik"]["database"]["tables"]
    assert sum(now.values()) == metadata["authentik"]["database"]["rows_total"]


def test_the_metadata_holds_what_production_held(state, metadata):
    before = json.loads((state / "counts.json").read_text(encoding="utf-8"))
    assert metadata["authentik"]["database"]["tables"] == before
    assert before["public.authentik_core_user"] > 0


def test_the_version_history_gained_no_row(settings):
    version, _build = authentik_support.newest_version(settings["idp_disaster_postgres"])
    assert version == settings["idp_disaster_version"]


def test_a_safety_set_of_the_destroyed_database_was_kept(settings):
    root = Path(settings["idp_disaster_backup_root"]) / (settings["idp_disaster_service"] + "-pre-restore")
    sets = [p for p in root.iterdir() if p.is_dir()]
    assert len(sets) == 1
    assert (sets[0] / "MANIFEST.sha256").is_file()
    safety = json.loads((sets[0] / "metadata.json").read_text(encoding="utf-8"))
    assert "public.authentik_core_user" not in safety["authentik"]["database"]["tables"]


def test_the_app_stand_ins_are_healthy(host, settings):
    server = authentik_support.container_ip(settings["idp_disaster_server"], settings["idp_disaster_network"])
    assert authentik_support.health("http://%s:9000/-/health/ready/" % server) == 200
    assert host.run("docker exec %s ak healthcheck" % settings["idp_disaster_worker"]).rc == 0
