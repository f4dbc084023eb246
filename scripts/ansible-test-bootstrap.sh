#!/usr/bin/env bash
# The offline pip bootstrap that `ansible-test --venv` asks for, for the ansible-test of the given
# Python environment (scripts/setup.sh for .venv, tests/versions/run.sh for each tested version).
#
#   scripts/ansible-test-bootstrap.sh PYTHON
set -euo pipefail

PYTHON=${1:?usage: ansible-test-bootstrap.sh PYTHON (the python of an environment with ansible-core)}

log() { printf 'setup: %s\n' "$*" >&2; }

bootstrap() {
    # ansible-test --venv runs ~/.ansible/test/cache/get_pip_<ver>.py, which it
    # would otherwise download, as `python get_pip.py [pip options] pip==<ver>
    # --no-setuptools --no-wheel`. The stand-in installs pip from the wheel
    # beside it instead.
    local version cache script wheel
    version=$("$PYTHON" - << 'EOF'
import re
import ansible_test._internal.python_requirements as m
with open(m.__file__, encoding='utf-8') as f:
    print(re.search(r"pip='([0-9.]+)'", f.read()).group(1))
EOF
)
    cache=$HOME/.ansible/test/cache
    script=$cache/get_pip_${version//./_}.py
    wheel=$cache/pip-$version-py3-none-any.whl
    if [[ -f $script && -f $wheel ]] && grep -q 'idp-recovery offline stand-in' "$script"; then
        return
    fi
    mkdir -p "$cache"
    if [[ ! -f $wheel ]]; then
        log "fetching the pip $version wheel for ansible-test"
        "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps \
            --only-binary=:all: -d "$cache" "pip==$version"
    fi
    cat > "$script.tmp" << EOF
# idp-recovery offline stand-in for get-pip.py $version, as used by ansible-test:
# installs pip from the wheel beside this file instead of an embedded copy.
import os
import sys

WHEEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'pip-$version-py3-none-any.whl')
DROP = {'--no-setuptools', '--no-wheel'}


def main():
    args = []
    for arg in sys.argv[1:]:
        if arg in DROP:
            continue
        args.append(WHEEL if arg == 'pip==$version' else arg)
    sys.path.insert(0, WHEEL)
    from pip._internal.cli.main import main as pip_main
    return pip_main(['install'] + args)


if __name__ == '__main__':
    sys.exit(main())
EOF
    mv "$script.tmp" "$script"
    log "installed the offline pip bootstrap $script"
}

bootstrap
