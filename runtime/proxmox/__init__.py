"""The Proxmox VE backend: every container a Proxmox CT, made and run through the Proxmox API
(issue 14; docs/proxmox.md "The backend"). Modules, one concern each:

- :mod:`.settings`: the ``[proxmox]`` section of config.toml;
- :mod:`.api`: the API client (token auth, TLS, UPID polling, errors, the event log);
- :mod:`.vmid`: VMID allocation from ``/cluster/nextid``;
- :mod:`.ctconfig`: the CT's options from the OCI spec, through one choke point;
- :mod:`.rootfs`: a template CT per image, each container a linked clone;
- :mod:`.initdir`: the project's init as the CT's entrypoint, stdio from the shim's directory;
- :mod:`.backend`: the Backend and its container handle; :mod:`.cleanup`: the ``delete`` action.
"""
