#!/usr/bin/env bash
# The oldest and the newest ansible-core that the collection claims (meta/runtime.yml
# requires_ansible), each from its wheel in a venv of its own under .build/versions/:
# ansible-test sanity and units, then the collection artifact built with that version, installed
# into an empty collections path, and the smoke play (tests/versions/smoke.yml) run from there.
#
#   tests/versions/run.sh [oldest|newest|all] [sanity|units|smoke|all]
#
# oldest: the newest patch release of the minor version named by requires_ansible (">=2.16" ->
# 2.16.x); newest: the newest release on the package index. The interpreter is the newest
# python3.X on PATH that the version supports as a controller (ansible-test's
# CONTROLLER_PYTHON_VERSIONS). Environment: IDP_VERSIONS_OLDEST / IDP_VERSIONS_NEWEST pin a
# version instead of asking the index.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BASE=$ROOT/.build/versions
PYTHONS=(3.14 3.13 3.12 3.11 3.10)
WHICH=${1:-all}
STEPS=${2:-all}

log() { printf 'versions: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

floor_minor() {
    local spec
    spec=$(awk -F: '$1 == "requires_ansible" { gsub(/[ "\x27]/, "", $2); print $2 }' "$ROOT/meta/runtime.yml")
    [[ $spec =~ ^\>=([0-9]+\.[0-9]+) ]] || die "requires_ansible '$spec' in meta/runtime.yml is not '>=X.Y[.Z]'"
    printf '%s\n' "${BASH_REMATCH[1]}"
}

interpreters() {
    local v exe
    local pyenv_root
    pyenv_root=$(pyenv root 2> /dev/null || true)
    for v in "${PYTHONS[@]}"; do
        # on PATH, else an interpreter of pyenv that its shims do not select
        exe=$(command -v "python$v" 2> /dev/null || true)
        if [[ -z $exe ]] || ! "$exe" -c 'import venv' 2> /dev/null; then
            exe=""
            if [[ -n $pyenv_root ]]; then
                exe=$(find "$pyenv_root/versions" -maxdepth 3 -path "*/versions/$v.*/bin/python$v" 2> /dev/null | sort -V | tail -n 1)
            fi
            if [[ -z $exe ]] || ! "$exe" -c 'import venv' 2> /dev/null; then
                continue
            fi
        fi
        printf '%s %s\n' "$v" "$exe"
    done
}

# every ansible-core release that some interpreter here can install, newest first (pip hides the
# releases whose Requires-Python excludes the interpreter that asks)
releases() {
    local v exe
    interpreters | while read -r v exe; do
        "$exe" -m pip index versions --disable-pip-version-check ansible-core 2> /dev/null |
            sed -n 's/^Available versions: //p' | tr ',' '\n' | tr -d ' '
    done | grep -E '^[0-9]+\.[0-9]+\.[0-9]+$' | sort -u -V -r
}

pick_version() {
    local which=$1 minor
    case $which in
        oldest)
            [[ -n ${IDP_VERSIONS_OLDEST:-} ]] && { echo "$IDP_VERSIONS_OLDEST"; return; }
            minor=$(floor_minor)
            releases | grep -E "^${minor//./\\.}\.[0-9]+$" | head -n 1
            ;;
        newest)
            [[ -n ${IDP_VERSIONS_NEWEST:-} ]] && { echo "$IDP_VERSIONS_NEWEST"; return; }
            releases | head -n 1
            ;;
    esac
}

# a venv with ansible-core VERSION under the newest interpreter it supports as a controller; prints
# "<venv> <python X.Y>"
make_venv() {
    local version=$1 v exe venv stamp want controller
    want=$(cat "$ROOT/tests/unit/requirements.txt" "$ROOT/requirements.txt" | sha256sum | cut -c1-16)
    while read -r v exe; do
        venv=$BASE/$version-py$v
        stamp=$venv/.idp-versions
        if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
            rm -rf "$venv"
            "$exe" -m venv "$venv"
            if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check "ansible-core==$version" pytest \
                -r "$ROOT/tests/unit/requirements.txt" -r "$ROOT/requirements.txt" > "$venv.log" 2>&1; then
                rm -rf "$venv"
                continue
            fi
        fi
        controller=$("$venv/bin/python" -c \
            'from ansible_test._internal.constants import CONTROLLER_PYTHON_VERSIONS as c; print(" ".join(c))')
        if [[ " $controller " == *" $v "* ]]; then
            printf '%s\n' "$want" > "$stamp"
            printf '%s %s\n' "$venv" "$v"
            return
        fi
        rm -rf "$venv"
    done < <(interpreters)
    die "no interpreter here runs ansible-core $version as a controller (tried: $(interpreters | cut -d' ' -f1 | xargs))"
}

smoke() {
    local venv=$1 version=$2 work
    work=$(mktemp -d "${TMPDIR:-/tmp}/idp-versions-smoke.XXXXXX")
    # shellcheck disable=SC2064  # clean this very directory
    trap "rm -rf '$work'" RETURN
    chmod 0700 "$work"
    "$venv/bin/ansible-galaxy" collection build --output-path "$work/dist" "$ROOT" > /dev/null
    mkdir "$work/collections" "$work/play"
    ANSIBLE_COLLECTIONS_PATH=$work/collections "$venv/bin/ansible-galaxy" collection install --no-deps \
        -p "$work/collections" "$work"/dist/idp-recovery-*.tar.gz > /dev/null
    (
        cd "$work"
        env -u PYTHONPATH ANSIBLE_COLLECTIONS_PATH="$work/collections" ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=False \
            ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 ANSIBLE_HOME="$work/ansible" ANSIBLE_LOCAL_TEMP="$work/ansible/tmp" \
            "$venv/bin/ansible-playbook" -i localhost, "$ROOT/tests/versions/smoke.yml" \
            -e "work=$work/play" -e "ansible_python_interpreter=$venv/bin/python" > "$work/smoke.log" 2>&1
    ) || { tail -n 60 "$work/smoke.log" >&2; die "the smoke play failed with ansible-core $version"; }
    grep -q 'failed=0' "$work/smoke.log" || die "no clean play recap with ansible-core $version"
    log "ansible-core $version: the smoke play passed from the installed artifact"
}

one() {
    local which=$1 version venv py tree started
    version=$(pick_version "$which")
    [[ -n $version ]] || die "no $which ansible-core release found on the package index"
    read -r venv py < <(make_venv "$version")
    log "$which: ansible-core $version on Python $py ($venv)"
    tree=$BASE/tree-$version/ansible_collections/idp/recovery
    "$ROOT/scripts/sync-tree.sh" "$tree"
    "$ROOT/scripts/ansible-test-bootstrap.sh" "$venv/bin/python"
    if [[ $STEPS == all || $STEPS == sanity ]]; then
        started=$(date +%s)
        (cd "$tree" && PATH=$venv/bin:$PATH ansible-test sanity --venv --python "$py" --color no)
        log "ansible-core $version: sanity passed in $(($(date +%s) - started)) s"
    fi
    if [[ $STEPS == all || $STEPS == units ]]; then
        started=$(date +%s)
        (cd "$tree" && PATH=$venv/bin:$PATH ansible-test units --venv --python "$py" --color no)
        log "ansible-core $version: units passed in $(($(date +%s) - started)) s"
    fi
    if [[ $STEPS == all || $STEPS == smoke ]]; then
        smoke "$venv" "$version"
    fi
}

case $WHICH in
    oldest|newest) one "$WHICH" ;;
    all) one oldest; one newest ;;
    *) die "unknown selection '$WHICH' (oldest, newest, all)" ;;
esac
