#!/usr/bin/env bash
# Build the execution environment of idp.recovery (extensions/ee/execution-environment.yml) with
# ansible-builder, from the local Debian image idp-recovery/postgres:15 and without a package
# index: the collection artifact and the wheels of every Python package the image installs are
# prepared on this machine first.
#
#   scripts/ee-build.sh [--if-needed] [--tag IMAGE]
#
#   1. ansible-galaxy collection build -> .build/ee/def/idp-recovery.tar.gz
#   2. the wheelhouse .build/ee/def/wheels: ansible-core (the version of .venv), ansible-runner,
#      what ansible-builder installs itself (bindep, PyYAML, packaging, dumb-init) and
#      requirements.txt, for this machine's Python
#   3. ansible-builder build -> IMAGE (default idp-recovery/ee:<collection version>), labelled
#      org.idp-recovery.recipe with a hash of the artifact's FILES.json, the definition and the
#      wheel list; with --if-needed an image whose label matches is left alone
#
# Environment: VENV (default .venv of the repository).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
STAGE=$ROOT/.build/ee
LABEL_KEY=org.idp-recovery.recipe
BUILDER_PACKAGES=(bindep pyyaml packaging 'dumb-init==1.2.5' 'ansible-runner>=2.4.0' setuptools wheel)

log() { printf 'ee: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if_needed=0
tag=""
while [[ $# -gt 0 ]]; do
    case $1 in
        --if-needed) if_needed=1 ;;
        --tag) shift; tag=${1:?--tag needs an image name} ;;
        -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (--if-needed, --tag IMAGE)" ;;
    esac
    shift
done

version=$(awk '$1 == "version:" { print $2; exit }' "$ROOT/galaxy.yml")
[[ -n $version ]] || die "no version in galaxy.yml"
tag=${tag:-idp-recovery/ee:$version}
core=$("$VENV/bin/python" -c 'import ansible.release as r; print(r.__version__)')
docker info > /dev/null 2>&1 || die "the Docker engine is not reachable (make setup starts it)"
docker image inspect idp-recovery/postgres:15 > /dev/null 2>&1 \
    || die "the base image idp-recovery/postgres:15 is missing (tests/images/build.sh 15)"

start=$(date +%s)
umask 077
rm -rf "$STAGE/def" "$STAGE/artifact"
mkdir -p "$STAGE/def" "$STAGE/artifact" "$STAGE/wheels"

# 1. the collection artifact, as it would be published
"$VENV/bin/ansible-galaxy" collection build --force --output-path "$STAGE/artifact" "$ROOT" > /dev/null
mv "$STAGE/artifact/idp-recovery-$version.tar.gz" "$STAGE/def/idp-recovery.tar.gz"
cp "$ROOT"/extensions/ee/{execution-environment.yml,requirements.yml,pkgmgr} "$STAGE/def/"

# 2. the wheelhouse (kept between builds: pip only fetches what is missing)
requirements=("ansible-core==$core" "${BUILDER_PACKAGES[@]}")
while read -r line; do
    line=${line%%#*}
    line=${line//[[:space:]]/}
    [[ -n $line ]] && requirements+=("$line")
done < "$ROOT/requirements.txt"
wheel_list=$(printf '%s\n' "${requirements[@]}" | sort)

hash=$({
    tar -xzOf "$STAGE/def/idp-recovery.tar.gz" FILES.json
    cat "$STAGE/def/execution-environment.yml" "$STAGE/def/requirements.yml" "$STAGE/def/pkgmgr" "${BASH_SOURCE[0]}"
    printf '%s\n' "$wheel_list"
} | sha256sum | cut -c1-16)
have=$(docker image inspect -f "{{ index .Config.Labels \"$LABEL_KEY\" }}" "$tag" 2> /dev/null || true)
if [[ $if_needed -eq 1 && $have == "$hash" ]]; then
    log "$tag is current ($hash)"
    exit 0
fi

if [[ $(cat "$STAGE/wheels/.list" 2> /dev/null) != "$wheel_list" ]]; then
    log "wheels for: ${requirements[*]}"
    rm -f "$STAGE/wheels/.list"
    "$VENV/bin/python" -m pip wheel -q --disable-pip-version-check -w "$STAGE/wheels" "${requirements[@]}"
    printf '%s\n' "$wheel_list" > "$STAGE/wheels/.list"
fi
mkdir -p "$STAGE/def/wheels"
cp "$STAGE"/wheels/*.whl "$STAGE/def/wheels/"

# 3. the image
log "building $tag (ansible-core $core, recipe $hash)"
rm -rf "$STAGE/context"
if ! "$VENV/bin/ansible-builder" build -v 2 --container-runtime docker \
    -f "$STAGE/def/execution-environment.yml" -c "$STAGE/context" -t "$tag" \
    --extra-build-cli-args "--label $LABEL_KEY=$hash" > "$STAGE/build.log" 2>&1; then
    tail -n 60 "$STAGE/build.log" >&2
    die "ansible-builder build failed (log: $STAGE/build.log)"
fi
log "built $tag in $(($(date +%s) - start)) s"
