"""Benchmarks: our shim against containerd's runc shim, side by side on one private containerd."""
