"""Test-suite wiring: the harness fixtures (private containerd, busybox image, leak checks)."""

pytest_plugins = ["tests.harness.fixtures"]
