#!/usr/bin/env bash
# make demo: set everything up, start the demo stack (an Authentik-shaped deployment and a second
# PostgreSQL database in containers, an S3 endpoint served by rclone, an age key), then run the
# collection's playbooks as an operator would - backup (with the offsite copy) and drill - and say
# where the set, the offsite copy and the drill report are. Running it again takes a new backup and
# drills it again.
#
#   make demo                 # everything in .demo/ (IDP_DEMO_DIR to choose another directory)
#   make demo-clean           # remove the demo's containers, network and directory
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEMO_DIR=${IDP_DEMO_DIR:-$ROOT/.demo}
case "$DEMO_DIR" in /*) ;; *) DEMO_DIR=$ROOT/$DEMO_DIR ;; esac

say() { printf '\ndemo: %s\n' "$*"; }

export PATH=$ROOT/.venv/bin:$PATH
export ANSIBLE_COLLECTIONS_PATH=$ROOT/.build/collections
export ANSIBLE_NOCOLOR=${ANSIBLE_NOCOLOR:-}

if [[ ${1:-} == clean ]]; then
    "$ROOT/scripts/setup.sh"
    ansible-playbook "$ROOT/scripts/demo/stack.yml" -e "idp_demo_dir=$DEMO_DIR" -e idp_demo_state=absent
    rm -rf -- "$DEMO_DIR"
    say "removed the demo stack and $DEMO_DIR"
    exit 0
fi

say "setting up (packages, .venv, Docker engine, images)"
"$ROOT/scripts/setup.sh"

say "starting the demo stack"
ansible-playbook "$ROOT/scripts/demo/stack.yml" -e "idp_demo_dir=$DEMO_DIR"

say "backing up (ansible-playbook idp.recovery.backup)"
ansible-playbook -i "$DEMO_DIR/inventory.yml" idp.recovery.backup

say "drilling the restore from the offsite copies (ansible-playbook idp.recovery.drill)"
drill_rc=0
ansible-playbook -i "$DEMO_DIR/inventory.yml" idp.recovery.drill || drill_rc=$?

"$ROOT/.venv/bin/python" - "$DEMO_DIR" <<'PY'
import json
import sys
from pathlib import Path

demo = Path(sys.argv[1])
status = json.loads((demo / 'status' / 'last-backup.json').read_text())
print('\n== idp.recovery demo ==')
for name, item in sorted(status['services'].items()):
    print('%-10s set      %s (%s bytes, %s)' % (name, item['set'], item['size_bytes'], item['result']))
    print('%-10s offsite  %s' % ('', item.get('offsite_remote') or item.get('offsite')))
print('offsite bucket on disk:  %s' % (demo / 's3' / 'idp-offsite'))
report = demo / 'drills' / 'latest.json'
if report.is_file():
    drill = json.loads(report.read_text())
    print('drill:                   %s' % drill['result'].upper())
    for item in drill.get('services', []):
        print('  %-10s %s: recovery %s, set age %s' % (item['name'], item.get('result', '?'), item.get('rto_human'), item.get('rpo_human')))
    print('drill report (HTML):     %s' % (demo / 'drills' / 'latest.html'))
    print('drill report (JSON):     %s' % report)
print('status file:             %s' % (demo / 'status' / 'last-backup.json'))
print('metrics:                 %s' % (demo / 'metrics'))
print('inventory:               %s' % (demo / 'inventory.yml'))
print('age identity:            %s' % (demo / 'secrets' / 'age.key'))
PY
exit "$drill_rc"
