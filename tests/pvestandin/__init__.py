"""A Proxmox VE API stand-in for tests: the official schema, Proxmox's wire behaviour, real LXC.

See docs/proxmox.md for every behaviour it assumes and where each comes from. Start it with
the pytest fixture in :mod:`tests.pvestandin.fixture` or ``python -m tests.pvestandin``.
"""
