"""ZFS storage: container datasets cloned from cached images, checkpoints, CRIU.

See docs/storage.md. Modules, one concern each: ``zfs_parse`` (pure parsing), ``runner`` (how
commands run), ``driver`` (the interface), ``zfs_cli``/``zfs_lzc``/``drivers`` (the two drivers
and the choice), ``layout`` (names), ``settings`` (``[storage]``), ``datasets``, ``layers``,
``images``, ``checkpoints``, ``criu``, ``metrics``, ``service`` (one pool put together),
``provisioner`` (the runtime seam), ``state`` and ``cleanup`` (the ``delete`` action), ``cli``.
"""
