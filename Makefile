# Development and test entry points for the idp.recovery collection.
# `make test` runs everything; each target first runs `make setup`, which is
# quick once the machine is prepared.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

ROOT := $(CURDIR)
VENV := $(ROOT)/.venv
# Python version for ansible-test: that of .venv unless given.
PYTHON_VERSION ?= $$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
COLLECTIONS := $(ROOT)/.build/collections
ANSIBLE_TEST_TREE := $(ROOT)/.build/ansible-test/ansible_collections/idp/recovery
ANSIBLE_TEST_ARGS ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=

export PATH := $(VENV)/bin:$(PATH)
ifdef CI
export NO_COLOR := 1
export ANSIBLE_NOCOLOR := 1
endif

# The collection as Ansible, pytest and Molecule see it: a symlink to this tree.
# (ansible-test works on its own copy and sets up its paths by itself.)
integration lint molecule bench: export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
integration molecule bench: export PYTHONPATH := $(COLLECTIONS)

.PHONY: demo demo-clean help setup sanity units integration lint molecule versions test bench build clean distclean ansible-test-tree

help:
	@echo 'make demo         demo stack, backup, offsite copy, restore drill and its report (.demo/)'
	@echo 'make demo-clean   remove the demo'
	@echo 'make setup        install system packages, .venv, Docker engine, test images'
	@echo 'make sanity       ansible-test sanity'
	@echo 'make units        ansible-test units (tests/unit)'
	@echo 'make integration  pytest tests/integration (real PostgreSQL, rclone, sshd)'
	@echo 'make lint         ansible-lint, production profile'
	@echo 'make molecule     every Molecule scenario under molecule/'
	@echo 'make versions     sanity, units and the artifact smoke play on the oldest and newest ansible-core'
	@echo 'make test         all of the above'
	@echo 'make bench        benchmarks (bench/run.py, bench/bench_*.py; BENCH=name selects)'
	@echo 'make build        collection artifact in .build/dist'
	@echo 'make clean        remove build and test output (keeps .venv and images)'

setup:
	@scripts/setup.sh

demo:
	@scripts/demo.sh

demo-clean:
	@scripts/demo.sh clean

ansible-test-tree: setup
	@scripts/sync-tree.sh $(ANSIBLE_TEST_TREE)

sanity: ansible-test-tree
	cd $(ANSIBLE_TEST_TREE) && ansible-test sanity --venv --python $(PYTHON_VERSION) $(ANSIBLE_TEST_ARGS)

units: ansible-test-tree
	@if ! find tests/unit -name 'test_*.py' -print -quit 2> /dev/null | grep -q .; then \
		echo 'units: no unit tests under tests/unit' >&2; exit 1; \
	else \
		cd $(ANSIBLE_TEST_TREE) && ansible-test units --venv --python $(PYTHON_VERSION) $(ANSIBLE_TEST_ARGS); \
	fi

integration: setup
	@if ! find tests/integration -name 'test_*.py' -print -quit 2> /dev/null | grep -q .; then \
		echo 'integration: no tests under tests/integration' >&2; exit 1; \
	else \
		set -x; pytest tests/integration -q $(PYTEST_ARGS); \
	fi

lint: setup
	ansible-lint
	$(VENV)/bin/python scripts/role-docs.py --check
	cd $(COLLECTIONS)/ansible_collections/idp/recovery && antsibull-docs lint-collection-docs --plugin-docs .

molecule: setup
	@found=0; \
	for conf in molecule/*/molecule.yml; do \
		[[ -f $$conf ]] || continue; \
		found=1; \
		scenario=$$(basename "$$(dirname "$$conf")"); \
		echo "molecule: scenario $$scenario"; \
		molecule test -s "$$scenario"; \
	done; \
	[[ $$found -eq 1 ]] || { echo 'molecule: no scenarios under molecule/' >&2; exit 1; }

versions: setup
	tests/versions/run.sh all

test: setup sanity units integration lint molecule versions

# BENCH selects the scripts: `make bench BENCH=authentik` runs bench/bench_authentik.py only;
# `archive` is bench/run.py (BENCH_ARGS go to it). Each script rewrites its own section of
# docs/performance.md; bench/perfdoc.py records the load average at its start and end and, once
# the scripts ran, rewrites the summary at the top and docs/performance.json from bench/results.
BENCH ?= all
bench: setup
	@ran=0; \
	if [[ "$(BENCH)" == all || " $(BENCH) " == *" archive "* ]]; then \
		ran=1; $(VENV)/bin/python bench/perfdoc.py run archive -- $(VENV)/bin/python bench/run.py $(BENCH_ARGS); \
	fi; \
	for script in bench/bench_*.py; do \
		[[ -f $$script ]] || continue; \
		name=$$(basename "$$script" .py); name=$${name#bench_}; \
		if [[ "$(BENCH)" == all || " $(BENCH) " == *" $$name "* ]]; then \
			ran=1; $(VENV)/bin/python bench/perfdoc.py run "$$name" -- $(VENV)/bin/python "$$script"; \
		fi; \
	done; \
	[[ $$ran -eq 1 ]] || { echo 'bench: nothing matches BENCH=$(BENCH)' >&2; exit 1; }; \
	$(VENV)/bin/python bench/perfdoc.py summary

build: ansible-test-tree
	mkdir -p .build/dist
	cd $(ANSIBLE_TEST_TREE) && ansible-galaxy collection build --force --output-path $(ROOT)/.build/dist

clean:
	rm -rf .build tests/output .pytest_cache
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf .venv
