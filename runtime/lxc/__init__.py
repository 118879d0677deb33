"""The LXC backend: OCI containers run by the local LXC tools (DESIGN.md section 5.1).

Modules: ``config`` (pure OCI → LXC translation), ``backend`` (``LxcBackend``), ``gate``
(the created state: the init reports its set-up and waits there; ``gate.sh``, the start-host
hook, reports its host PID), ``cleanup`` (the ``delete`` action, standard library
only), ``mount``, ``rootfs``, ``cgroup``, ``state``.

Deliberately imports nothing: ``cleanup`` must load fast in the short-lived ``delete`` process,
so the asyncio backend is only imported by whoever names ``runtime.lxc.backend``.
"""
