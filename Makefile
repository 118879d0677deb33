# Proxmox LXCRI. The two commands that matter: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
export PATH := $(VENV)/bin:$(PATH)

.PHONY: setup demo demo-proxmox test test-unit test-integration test-kernel test-pve9 lint protos bench clean deb

## Install Debian packages, the virtual environment and the launchers (idempotent).
setup:
	@bash packaging/setup.sh "$(CURDIR)" "$(VENV)"

## The main job: run a busybox container through io.containerd.proxmox.v2 on a private containerd.
demo: setup
	@$(PY) -m tests.harness.demo

## The same hello through the Proxmox VE backend, against the Proxmox stand-in (tests/pvestandin).
demo-proxmox: setup
	@$(PY) -m tests.harness.demo_proxmox

## Lint, type-check and run the whole test suite (unit, integration, kernel test host).
test: setup lint
	@bash .ci/pytest.sh

test-unit: setup
	$(PY) -m pytest tests/unit -q

test-integration: setup
	$(PY) -m pytest tests/integration -q

## Only the tests that run inside the kernel test host (QEMU, Debian's stock kernel).
test-kernel: setup
	$(PY) -m pytest -p tests.kernelhost.plugin -m kernel tests -q

## Only the tests of the Proxmox-VE-9-like kernel test host (QEMU, Debian 13, systemd, LXC 6).
test-pve9: setup
	$(PY) -m pytest -p tests.kernelhost.plugin -m pve9 tests -q

lint: setup
	$(PY) -m ruff check shim runtime storage network tests bench protos/generate.py
	$(PY) -m mypy

## A Debian package (dist/proxmox-lxcri_<version>_<arch>.deb): the runtime under its own prefix.
deb:
	@bash packaging/build-deb.sh "$(CURDIR)" "$(CURDIR)/dist"

## Regenerate protos/*_pb2.py from the .proto files.
protos: setup
	$(PY) -m protos.generate

## Benchmarks against containerd's runc shim; results go to docs/benchmarks.md with the date.
bench: setup
	$(PY) -m bench.run_vs_runc --record docs/benchmarks.md
	$(PY) -m bench.memory --record docs/benchmarks.md
	$(PY) -m bench.exec_vs_runc --record docs/benchmarks.md
	$(PY) -m bench.pod_memory --record docs/benchmarks.md
	$(PY) -m bench.zfs_provision --record
	$(PY) -m bench.zfs_checkpoint --record
	$(PY) -m bench.network_setup --record docs/benchmarks.md
	$(PY) -m bench.network_ipam --record docs/benchmarks.md
	$(PY) -m bench.own_init --record
	$(PY) -m bench.metrics_cost --record docs/benchmarks.md

clean:
	rm -rf $(VENV) .stamps .mypy_cache .ruff_cache .pytest_cache dist
