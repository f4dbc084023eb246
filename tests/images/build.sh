#!/usr/bin/env bash
# Build the local PostgreSQL test images without any image registry:
# debootstrap a minimal Debian root file system, add a small entrypoint, and
# `docker import` it.
#
#   tests/images/build.sh [--if-needed] [15|17|all]
#   tests/images/build.sh [--if-needed] authentik-standin [--authentik-version V]...
#   tests/images/build.sh [--if-needed] fleet-host
#
#   15  -> idp-recovery/postgres:15  (Debian bookworm, PostgreSQL 15)
#   17  -> idp-recovery/postgres:17  (Debian trixie,   PostgreSQL 17)
#   authentik-standin -> idp-recovery/authentik-standin:V (default V 2025.10.1):
#       the authentik server/worker stand-in, `docker build` from postgres:15
#   fleet-host -> idp-recovery/fleet-host:15: postgres:15 plus sshd and sudo, a
#       managed host reached over SSH (fleet tests and benchmark)
#
# Each image carries the label org.idp-recovery.recipe, a hash of its recipe and
# the version; with --if-needed an image whose label matches is left alone.
#
# Environment: IDP_IMAGE_MIRROR overrides the Debian mirror (default: the first
# URIs line of /etc/apt/sources.list.d/debian.sources, else deb.debian.org);
# IDP_AUTHENTIK_VERSION the stand-in's default version.
set -euo pipefail

SCRIPT=$(readlink -f "${BASH_SOURCE[0]}")
IMAGE_REPO=${IDP_IMAGE_REPO:-idp-recovery/postgres}
LABEL_KEY=org.idp-recovery.recipe
PACKAGES_COMMON=python3,python3-psycopg2,age,zstd,gnupg,gzip,tar,procps,ca-certificates,iproute2,pgbackrest

log() { printf 'images: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    sed -n '2,22p' "$SCRIPT" | sed 's/^# \{0,1\}//'
    exit 2
}

mirror() {
    if [[ -n ${IDP_IMAGE_MIRROR:-} ]]; then
        printf '%s\n' "$IDP_IMAGE_MIRROR"
        return
    fi
    local uri=""
    if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
        # First URIs line that is the main archive (not debian-security).
        uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' \
            /etc/apt/sources.list.d/debian.sources)
    fi
    if [[ -z $uri && -r /etc/apt/sources.list ]]; then
        uri=$(awk '$1 == "deb" && $2 !~ /security/ { print $2; exit }' /etc/apt/sources.list)
    fi
    printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

recipe_hash() {
    # $1 = PostgreSQL major version
    { cat "$SCRIPT"; printf 'version=%s\n' "$1"; } | sha256sum | cut -c1-16
}

suite_for() {
    case $1 in
        15) echo bookworm ;;
        17) echo trixie ;;
        *) die "unsupported PostgreSQL version '$1' (15 or 17)" ;;
    esac
}

image_is_current() {
    # $1 = version; true when the image exists with the current recipe label.
    local have
    have=$(docker image inspect -f "{{ index .Config.Labels \"$LABEL_KEY\" }}" \
        "$IMAGE_REPO:$1" 2>/dev/null) || return 1
    [[ $have == "$(recipe_hash "$1")" ]]
}

write_entrypoint() {
    # $1 = root file system
    install -d -m 0755 "$1/usr/local/bin"
    cat > "$1/usr/local/bin/idp-pg-entrypoint" <<'ENTRYPOINT'
#!/bin/sh
# Start PostgreSQL in the foreground, initialising a cluster in $PGDATA on the
# first start. Environment: POSTGRES_PASSWORD (required for a new cluster),
# POSTGRES_USER (default postgres), POSTGRES_DB (default: the user name).
# Any command other than `postgres` (or options for it) is run as given.
set -eu

case "${1:-postgres}" in
    -*) set -- postgres "$@" ;;
esac
[ "$#" -gt 0 ] || set -- postgres
if [ "$1" != postgres ]; then
    exec "$@"
fi

PGDATA=${PGDATA:-/var/lib/postgresql/data}
export PGDATA

if [ "$(id -u)" = 0 ]; then
    install -d -o postgres -g postgres -m 0700 "$PGDATA"
    install -d -o postgres -g postgres -m 2775 /run/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "idp-pg-entrypoint: POSTGRES_PASSWORD must be set to initialise a new cluster" >&2
        exit 1
    fi
    user=${POSTGRES_USER:-postgres}
    db=${POSTGRES_DB:-$user}
    pwfile=$(mktemp)
    trap 'rm -f "$pwfile"' EXIT
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb --username="$user" --pwfile="$pwfile" --auth-local=trust \
        --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 \
        -D "$PGDATA" > /dev/null
    rm -f "$pwfile"
    trap - EXIT
    cat >> "$PGDATA/postgresql.conf" <<CONF
listen_addresses = '*'
password_encryption = scram-sha-256
CONF
    cat >> "$PGDATA/pg_hba.conf" <<HBA
host all all 0.0.0.0/0 scram-sha-256
host all all ::/0 scram-sha-256
HBA
    if [ "$db" != postgres ]; then
        pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start > /dev/null
        psql -v ON_ERROR_STOP=1 -q --username="$user" --dbname=postgres \
            -v db="$db" -v owner="$user" > /dev/null <<'SQL'
CREATE DATABASE :"db" OWNER :"owner";
SQL
        pg_ctl -D "$PGDATA" -m fast -w stop > /dev/null
    fi
    echo "idp-pg-entrypoint: initialised cluster in $PGDATA (user $user, database $db)" >&2
fi

# postgres treats SIGTERM (what `docker stop` sends) as a "smart" shutdown that
# waits for every client to go; an imported image cannot set STOPSIGNAL, so the
# signal is turned into SIGINT, PostgreSQL's fast shutdown, here.
"$@" &
pid=$!
trap 'kill -INT "$pid" 2> /dev/null || true' TERM INT
trap 'kill -HUP "$pid" 2> /dev/null || true' HUP
status=0
while :; do
    if wait "$pid"; then status=0; else status=$?; fi
    kill -0 "$pid" 2> /dev/null || break
done
exit "$status"
ENTRYPOINT
    chmod 0755 "$1/usr/local/bin/idp-pg-entrypoint"
}

unmount_below() {
    # Lazily unmount anything left mounted below $1 (deepest first).
    local dir=$1 mnt
    awk -v d="$dir" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done
}

build_one() {
    local version=$1 suite mirror_url tmp rootfs hash start pgbin
    suite=$(suite_for "$version")
    mirror_url=$(mirror)
    hash=$(recipe_hash "$version")
    start=$(date +%s)
    command -v debootstrap > /dev/null || die "debootstrap is not installed"
    docker info > /dev/null 2>&1 || die "the Docker engine is not reachable"

    tmp=$(mktemp -d /var/tmp/idp-recovery-image.XXXXXX)
    rootfs=$tmp/rootfs
    # shellcheck disable=SC2064  # expand now: the trap must clean this very directory
    trap "unmount_below '$tmp'; rm -rf '$tmp'" EXIT

    log "building $IMAGE_REPO:$version from Debian $suite ($mirror_url)"
    if ! debootstrap --variant=minbase --components=main \
        --include="postgresql-$version,$PACKAGES_COMMON" \
        "$suite" "$rootfs" "$mirror_url" > "$tmp/debootstrap.log" 2>&1; then
        tail -n 40 "$tmp/debootstrap.log" >&2
        [[ -f $rootfs/debootstrap/debootstrap.log ]] && tail -n 40 "$rootfs/debootstrap/debootstrap.log" >&2
        die "debootstrap of $suite failed"
    fi

    pgbin=/usr/lib/postgresql/$version/bin
    [[ -x $rootfs$pgbin/postgres ]] || die "PostgreSQL $version binaries missing in the root file system"

    # The package's postinst creates a default cluster; the entrypoint makes its own.
    rm -rf "$rootfs/etc/postgresql/$version/main" "$rootfs/var/lib/postgresql/$version"
    install -d -o 0 -g 0 -m 0755 "$rootfs/var/lib/postgresql"
    write_entrypoint "$rootfs"

    # Keep the image small and free of host specifics.
    rm -f "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/debootstrap \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
        "$rootfs"/usr/share/locale/*
    : > "$rootfs/etc/resolv.conf"
    rm -f "$rootfs/etc/hostname"

    local old_id new_id
    old_id=$(docker image inspect -f '{{ .Id }}' "$IMAGE_REPO:$version" 2> /dev/null || true)
    log "importing into docker"
    tar --numeric-owner -C "$rootfs" -c . | docker import \
        --change "ENV PATH=$pgbin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        --change "ENV PGDATA=/var/lib/postgresql/data" \
        --change "ENV LANG=C.UTF-8" \
        --change "LABEL $LABEL_KEY=$hash" \
        --change "LABEL org.idp-recovery.postgresql=$version" \
        --change "LABEL org.idp-recovery.debian-suite=$suite" \
        --change "EXPOSE 5432" \
        --change 'ENTRYPOINT ["/usr/local/bin/idp-pg-entrypoint"]' \
        --change 'CMD ["postgres"]' \
        - "$IMAGE_REPO:$version" > /dev/null
    new_id=$(docker image inspect -f '{{ .Id }}' "$IMAGE_REPO:$version")
    if [[ -n $old_id && $old_id != "$new_id" ]]; then
        # The replaced image, unless a container still uses it.
        docker image rm "$old_id" > /dev/null 2>&1 || true
    fi

    unmount_below "$tmp"
    rm -rf "$tmp"
    trap - EXIT
    log "built $IMAGE_REPO:$version in $(($(date +%s) - start)) s"
}

# The authentik stand-in ------------------------------------------------------
STANDIN_REPO=${IDP_STANDIN_REPO:-idp-recovery/authentik-standin}
STANDIN_DIR=$(dirname "$SCRIPT")/authentik-standin
STANDIN_BASE=$IMAGE_REPO:15

standin_hash() {
    # $1 = Authentik version; the recipe includes the base image it is built on.
    {
        cat "$STANDIN_DIR/Dockerfile" "$STANDIN_DIR/authentik_standin.py"
        printf 'version=%s\n' "$1"
        docker image inspect -f '{{ .Id }}' "$STANDIN_BASE"
    } | sha256sum | cut -c1-16
}

standin_is_current() {
    local have
    have=$(docker image inspect -f "{{ index .Config.Labels \"$LABEL_KEY\" }}" \
        "$STANDIN_REPO:$1" 2>/dev/null) || return 1
    [[ $have == "$(standin_hash "$1")" ]]
}

docker_build() {
    # $1 = image (REPO:TAG), $2 = build context, then --build-arg values (NAME=VALUE)
    local image=$1 context=$2 old_id new_id out builder=() arg args=()
    shift 2
    for arg in "$@"; do args+=(--build-arg "$arg"); done
    # The legacy builder when buildx is not installed; either way nothing is pulled.
    docker buildx version > /dev/null 2>&1 || builder=(env DOCKER_BUILDKIT=0)
    old_id=$(docker image inspect -f '{{ .Id }}' "$image" 2> /dev/null || true)
    if ! out=$("${builder[@]}" docker build --pull=false --force-rm "${args[@]}" -t "$image" "$context" 2>&1); then
        printf '%s\n' "$out" | tail -n 30 >&2
        die "docker build of $image failed"
    fi
    new_id=$(docker image inspect -f '{{ .Id }}' "$image")
    if [[ -n $old_id && $old_id != "$new_id" ]]; then
        docker image rm "$old_id" > /dev/null 2>&1 || true
    fi
    log "built $image"
}

build_standin() {
    # $1 = Authentik version
    local version=$1 hash
    [[ $version =~ ^[0-9]{4}\.[0-9]{1,2}\.[0-9]+ ]] || die "not an Authentik version: '$version'"
    docker image inspect "$STANDIN_BASE" > /dev/null 2>&1 ||
        die "$STANDIN_BASE is missing; build it first (tests/images/build.sh 15)"
    hash=$(standin_hash "$version")
    log "building $STANDIN_REPO:$version from $STANDIN_BASE"
    docker_build "$STANDIN_REPO:$version" "$STANDIN_DIR" "BASE_IMAGE=$STANDIN_BASE" \
        "AUTHENTIK_VERSION=$version" "AUTHENTIK_BUILD=standin-$hash" "RECIPE=$hash"
}

standin_main() {
    # $1 = if_needed, then the versions
    local if_needed=$1 v
    shift
    docker info > /dev/null 2>&1 || die "the Docker engine is not reachable"
    for v in "$@"; do
        if $if_needed && standin_is_current "$v"; then
            continue
        fi
        build_standin "$v"
    done
}

# The fleet host -------------------------------------------------------------
FLEET_IMAGE=${IDP_FLEET_IMAGE:-idp-recovery/fleet-host:15}
FLEET_DIR=$(dirname "$SCRIPT")/fleet-host

fleet_hash() {
    # the recipe includes the base image it is built on
    { cat "$FLEET_DIR"/*; docker image inspect -f '{{ .Id }}' "$STANDIN_BASE"; } | sha256sum | cut -c1-16
}

fleet_main() {
    # $1 = if_needed
    local hash
    docker info > /dev/null 2>&1 || die "the Docker engine is not reachable"
    docker image inspect "$STANDIN_BASE" > /dev/null 2>&1 ||
        die "$STANDIN_BASE is missing; build it first (tests/images/build.sh 15)"
    hash=$(fleet_hash)
    if $1 && [[ $(docker image inspect -f "{{ index .Config.Labels \"$LABEL_KEY\" }}" "$FLEET_IMAGE" 2> /dev/null) == "$hash" ]]; then
        return
    fi
    log "building $FLEET_IMAGE from $STANDIN_BASE"
    docker_build "$FLEET_IMAGE" "$FLEET_DIR" "BASE_IMAGE=$STANDIN_BASE" "RECIPE=$hash"
}

main() {
    local if_needed=false target=all v standin_versions=()
    while [[ $# -gt 0 ]]; do
        case $1 in
            --if-needed) if_needed=true ;;
            -h | --help) usage ;;
            15 | 17 | all | authentik-standin | fleet-host) target=$1 ;;
            --authentik-version)
                [[ $# -ge 2 ]] || usage
                standin_versions+=("$2")
                shift
                ;;
            *) usage ;;
        esac
        shift
    done
    if [[ $target == fleet-host ]]; then
        [[ ${#standin_versions[@]} -eq 0 ]] || usage
        fleet_main "$if_needed"
        return
    fi
    if [[ $target == authentik-standin ]]; then
        [[ ${#standin_versions[@]} -gt 0 ]] || standin_versions=("${IDP_AUTHENTIK_VERSION:-2025.10.1}")
        standin_main "$if_needed" "${standin_versions[@]}"
        return
    fi
    [[ ${#standin_versions[@]} -eq 0 ]] || usage
    [[ $(id -u) -eq 0 ]] || die "debootstrap needs root"

    local versions=(15 17) todo=() pids=() failed=0 i
    [[ $target == all ]] || versions=("$target")
    for v in "${versions[@]}"; do
        if $if_needed && image_is_current "$v"; then
            continue
        fi
        todo+=("$v")
    done
    # Each build is mostly download and dpkg on one core: run them side by side.
    for v in "${todo[@]}"; do
        (build_one "$v") &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || { log "build of $IMAGE_REPO:${todo[$i]} failed"; failed=1; }
    done
    return "$failed"
}

main "$@"
