#!/usr/bin/env bash
# Mirror the collection's source files (git-tracked plus untracked files that are
# not ignored) into DEST, e.g. .build/ansible-test/ansible_collections/idp/recovery,
# because ansible-test insists on running from a real ansible_collections/NS/NAME
# directory. DEST/tests/output (ansible-test's results) is kept.
#
# DEST gets an empty git repository of its own: ansible-test lists the files to
# test with `git ls-files` from the nearest .git upwards, and would otherwise find
# the enclosing repository, in which DEST is ignored, and test nothing.
#
#   scripts/sync-tree.sh DEST
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST=${1:?usage: $0 DEST}
cd "$ROOT"
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)

list=$(mktemp)
have=$(mktemp)
trap 'rm -f "$list" "$have"' EXIT

# Source files, NUL separated and sorted; files deleted from the work tree are skipped.
if git rev-parse --is-inside-work-tree > /dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard --deduplicate
else
    find . \( -path ./.git -o -path ./.venv -o -path ./.build -o -path ./tests/output \) -prune \
        -o \( -type f -o -type l \) -printf '%P\0'
fi | while IFS= read -r -d '' f; do
    case $f in tests/output/* | .build/* | .venv/*) continue ;; esac
    if [[ -e $f || -L $f ]]; then printf '%s\0' "$f"; fi
done | LC_ALL=C sort -z -u > "$list"

rsync -a --from0 --files-from="$list" ./ "$DEST/"

# Remove what is no longer a source file (but never ansible-test's output).
(cd "$DEST" && find . \( -path ./tests/output -o -path ./.git \) -prune -o \( -type f -o -type l \) -printf '%P\0') |
    LC_ALL=C sort -z > "$have"
LC_ALL=C comm -z -23 "$have" "$list" | (cd "$DEST" && xargs -0 -r rm -f --)
find "$DEST" -mindepth 1 -depth -type d -empty -not -path "$DEST/tests/output*" -not -path "$DEST/.git*" -delete

[[ -d $DEST/.git ]] || git -C "$DEST" init -q
