#!/usr/bin/env bash
# Prepare this machine for developing and testing idp.recovery (Debian/Ubuntu, as root).
# Idempotent; when everything is in place it finishes in about a second.
#
#   1. system packages (only the missing ones are installed)
#   2. .venv with the development and run-time requirements
#   3. a running Docker engine (dockerd is started in the background if needed)
#   4. the local PostgreSQL test images and the authentik stand-in image
#      (built only when missing or outdated)
#   5. .build/collections/ansible_collections/idp/recovery -> repository root
#   6. the offline pip bootstrap that `ansible-test --venv` asks for
#
# Environment:
#   PYTHON                       interpreter for .venv (default: python3)
#   IDP_SKIP_IMAGES=1            do not build the test images
#   IDP_DOCKERD_STORAGE_DRIVER   storage driver for a dockerd started here
#                                (default: dockerd's choice, vfs as fallback)
#   IDP_DOCKERD_OPTS             more options for a dockerd started here
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

VENV=$ROOT/.venv
BUILD=$ROOT/.build
STAMP=$VENV/.idp-requirements.sha256
DOCKERD_LOG=/var/log/idp-recovery-dockerd.log
APT_PACKAGES=(
    docker.io debootstrap debian-archive-keyring age gnupg zstd gzip tar
    postgresql-client rsync openssh-server openssh-client openssl python3-venv git make
    shellcheck
)

log() { printf 'setup: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo > /dev/null; then
        sudo "$@"
    else
        die "root is needed for: $*"
    fi
}

# 1. System packages --------------------------------------------------------
apt_packages() {
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        # A Docker engine from elsewhere (docker-ce) is as good as docker.io.
        if [[ $pkg == docker.io ]] && command -v dockerd > /dev/null; then
            continue
        fi
        if [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2> /dev/null) != ii* ]]; then
            missing+=("$pkg")
        fi
    done
    [[ ${#missing[@]} -eq 0 ]] && return
    command -v apt-get > /dev/null || die "missing packages ${missing[*]} and no apt-get"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -q
    as_root apt-get install -y -q --no-install-recommends "${missing[@]}" < /dev/null
}

# 2. Virtual environment ----------------------------------------------------
requirements_hash() {
    {
        cat tests/requirements.txt requirements.txt
        "${PYTHON:-python3}" -c 'import sys; print(sys.version)'
    } | sha256sum | cut -d' ' -f1
}

venv() {
    local want
    want=$(requirements_hash)
    if [[ -x $VENV/bin/python && -f $STAMP && $(< "$STAMP") == "$want" ]]; then
        return
    fi
    if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c 'import pip' 2> /dev/null; then
        log "creating $VENV"
        rm -rf "$VENV"
        "${PYTHON:-python3}" -m venv "$VENV"
    fi
    log "installing Python requirements into .venv"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -U pip
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        -r tests/requirements.txt -r requirements.txt
    printf '%s\n' "$want" > "$STAMP"
}

# 3. Docker engine ----------------------------------------------------------
wait_for_docker() {
    # $1 = pid of dockerd, $2 = seconds
    local i
    for ((i = 0; i < $2; i++)); do
        docker info > /dev/null 2>&1 && return 0
        kill -0 "$1" 2> /dev/null || return 1
        sleep 1
    done
    return 1
}

start_dockerd() {
    # $@ = extra dockerd options; returns 0 once the engine answers.
    local pid extra=()
    read -r -a extra <<< "${IDP_DOCKERD_OPTS:-}"
    # setsid + nohup: the daemon outlives this script and the make run.
    # 9>&-: the daemon must not hold the lock of this script (taken below) for the rest of its life
    setsid nohup dockerd "${extra[@]}" "$@" >> "$DOCKERD_LOG" 2>&1 < /dev/null 9>&- &
    pid=$!
    if wait_for_docker "$pid" 60; then
        return 0
    fi
    kill "$pid" 2> /dev/null || true
    sleep 2
    return 1
}

docker_engine() {
    docker info > /dev/null 2>&1 && return
    command -v dockerd > /dev/null || die "dockerd is not installed"
    [[ $(id -u) -eq 0 ]] || die "the Docker engine is not running; start it, or run this as root"
    log "starting dockerd (log: $DOCKERD_LOG)"
    if [[ -n ${IDP_DOCKERD_STORAGE_DRIVER:-} ]]; then
        start_dockerd --storage-driver "$IDP_DOCKERD_STORAGE_DRIVER" ||
            die "dockerd did not start; see $DOCKERD_LOG"
    elif ! start_dockerd; then
        log "dockerd did not start with its default storage driver; trying vfs"
        start_dockerd --storage-driver vfs || die "dockerd did not start; see $DOCKERD_LOG"
    fi
    log "dockerd is up (storage driver: $(docker info -f '{{ .Driver }}'))"
}

# 4. Test images ------------------------------------------------------------
images() {
    [[ ${IDP_SKIP_IMAGES:-0} == 1 ]] && return
    tests/images/build.sh --if-needed all
    # the authentik server/worker stand-in, built from the PostgreSQL 15 image
    tests/images/build.sh --if-needed authentik-standin
    # a managed host reached over SSH (sshd, sudo, PostgreSQL), built from the PostgreSQL 15 image
    tests/images/build.sh --if-needed fleet-host
}

# 5. Collection path --------------------------------------------------------
collection_path() {
    local ns=$BUILD/collections/ansible_collections/idp link
    link=$ns/recovery
    if [[ $(readlink "$link" 2> /dev/null) == ../../../.. ]]; then
        return
    fi
    mkdir -p "$ns"
    rm -rf "$link"
    ln -s ../../../.. "$link"
    log "linked $link -> repository root"
}

check_collection() {
    # Only when something changed: ansible-doc costs a couple of seconds.
    compgen -G 'plugins/modules/*.py' > /dev/null || return 0
    local out
    out=$(ANSIBLE_COLLECTIONS_PATH=$BUILD/collections "$VENV/bin/ansible-doc" -l idp.recovery 2>&1) ||
        die "ansible-doc -l idp.recovery failed: $out"
    grep -q '^idp\.recovery\.' <<< "$out" || die "ansible-doc lists no idp.recovery modules: $out"
    log "ansible-doc finds $(grep -c '^idp\.recovery\.' <<< "$out") idp.recovery module(s)"
}

# 6. Offline pip bootstrap for ansible-test ---------------------------------
ansible_test_bootstrap() {
    "$ROOT/scripts/ansible-test-bootstrap.sh" "$VENV/bin/python"
}

main() {
    local changed=false
    # one setup at a time: two concurrent runs would start two Docker engines
    mkdir -p "$ROOT/.build"
    exec 9> "$ROOT/.build/setup.lock"
    flock 9
    [[ -x $VENV/bin/python && -f $STAMP && -L $BUILD/collections/ansible_collections/idp/recovery ]] ||
        changed=true
    apt_packages
    venv
    docker_engine
    images
    collection_path
    ansible_test_bootstrap
    if $changed; then
        check_collection
    fi
}

main "$@"
