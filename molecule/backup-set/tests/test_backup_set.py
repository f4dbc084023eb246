# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Check the backup sets of the backup-set scenario inside the container, with stock tools only.

Nothing here uses the collection: a set must stand on its own in an emergency
(`sha256sum -c`, `age -d`, `zstd -d`, `tar -x`).
"""

import json
import os

import pytest
import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("backup_targets")

SET_FILES = ("metadata.json", "MANIFEST.sha256")
STOCK_RESTORE = "/tmp/idp-molecule-stock-restore"
AGE_HEADER = b"age-encryption.org/v1\n"


def bash(host, script, *args):
    """Run a bash script (with -euo pipefail) in the container; return its stdout."""
    return host.check_output("bash -euo pipefail -c %s bash" + " %s" * len(args), script, *args)


def tree_listing(host, path):
    """Names, types, modes, owners, link targets and file checksums of a tree, sorted."""
    return bash(
        host,
        'cd "$1"'
        " && find . -printf '%y %m %u:%g %p -> %l\\n' | LC_ALL=C sort"
        " && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum",
        path,
    )


@pytest.fixture(scope="module")
def settings(host):
    return host.ansible.get_variables()


@pytest.fixture(scope="module")
def recipient(host, settings):
    return host.check_output("age-keygen -y %s", settings["idp_molecule_identity"]).strip()


@pytest.fixture(scope="module", params=["time-stamped", "pinned"])
def backup_set(request, host, settings):
    if request.param == "pinned":
        return settings["idp_molecule_pinned_set"]
    service_dir = "%s/%s" % (settings["idp_molecule_backup_root"], settings["idp_molecule_service"])
    found = host.check_output("find %s -mindepth 1 -maxdepth 1 -type d", service_dir).splitlines()
    assert len(found) == 1, "expected exactly one set in %s, found %r" % (service_dir, found)
    return found[0]


@pytest.fixture(scope="module")
def metadata(host, backup_set):
    return json.loads(host.file(backup_set + "/metadata.json").content_string)


def test_source_tree_is_not_trivial(host, settings):
    listing = tree_listing(host, settings["idp_molecule_source"])
    for expected in ("l 777", "./empty-directory", "postgres:postgres", "ünïcödé", "name with spaces"):
        assert expected in listing


def test_set_directory_is_private(host, backup_set):
    directory = host.file(backup_set)
    assert directory.is_directory
    assert directory.user == "root"
    assert directory.mode == 0o700


def test_set_files_are_private(host, settings, backup_set):
    for name in SET_FILES + (settings["idp_molecule_payload"],):
        item = host.file("%s/%s" % (backup_set, name))
        assert item.is_file, name
        assert item.mode == 0o600, name


def test_set_is_complete_and_closed(host, backup_set):
    assert not host.file(backup_set + "/.in-progress").exists
    assert not host.file(backup_set + "/.metadata.d").exists


def test_manifest_lists_every_other_file(host, settings, backup_set):
    manifest = host.file(backup_set + "/MANIFEST.sha256").content_string
    listed = sorted(line.split("  ", 1)[1] for line in manifest.splitlines() if line)
    assert listed == sorted(["metadata.json", settings["idp_molecule_payload"]])


def test_manifest_passes_sha256sum(host, backup_set):
    bash(host, 'cd "$1" && sha256sum --check --strict --quiet MANIFEST.sha256', backup_set)


def test_payload_is_an_age_file(host, settings, backup_set):
    payload = "%s/%s" % (backup_set, settings["idp_molecule_payload"])
    assert host.file(payload).content[: len(AGE_HEADER)] == AGE_HEADER


def test_stock_tools_restore_the_source_byte_for_byte(host, settings, backup_set):
    payload = "%s/%s" % (backup_set, settings["idp_molecule_payload"])
    bash(
        host,
        'rm -rf "$3" && mkdir -m 0700 "$3" && age -d -i "$1" "$2" | zstd -d -q | tar -x -C "$3"',
        settings["idp_molecule_identity"],
        payload,
        STOCK_RESTORE,
    )
    try:
        assert tree_listing(host, STOCK_RESTORE) == tree_listing(host, settings["idp_molecule_source"])
    finally:
        host.run("rm -rf %s", STOCK_RESTORE)


def test_collection_restore_matches_the_source(host, settings):
    assert tree_listing(host, settings["idp_molecule_restore"]) == tree_listing(
        host, settings["idp_molecule_source"]
    )


def test_metadata_describes_the_payload(host, settings, backup_set, metadata, recipient):
    assert metadata["format_version"] == 1
    payload_name = settings["idp_molecule_payload"]
    assert sorted(metadata["payloads"]) == [payload_name]
    payload = metadata["payloads"][payload_name]
    assert payload["encryption"] == "age"
    assert payload["recipients"] == [recipient]
    assert payload["compression"] == "zstd"
    assert payload["format"] == "tar"
    assert payload["source"]["type"] == "directory"
    assert payload["size"] == host.file("%s/%s" % (backup_set, payload_name)).size
    assert payload["sha256"] == host.file("%s/%s" % (backup_set, payload_name)).sha256sum
    assert metadata["origin"] == "molecule backup-set scenario"


def test_metadata_holds_no_private_key_material(host, settings, backup_set):
    identity = host.file(settings["idp_molecule_identity"]).content_string
    secrets = [line.strip() for line in identity.splitlines() if line.startswith("AGE-SECRET-KEY-")]
    assert len(secrets) == 1
    for name in SET_FILES:
        text = host.file("%s/%s" % (backup_set, name)).content_string
        assert secrets[0] not in text, name
        assert "AGE-SECRET-KEY" not in text.upper(), name
