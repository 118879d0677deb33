"""Shim-managed container networking: bridges, VLANs, IP pools, DNS (DESIGN.md section 7).

Modules, one concern each:

- :mod:`network.config` parses the ``[network]`` section of the operator's configuration (pure);
- :mod:`network.plan` derives a container's :class:`~network.plan.NetworkPlan` from the spec,
  the annotations and the configuration (pure);
- :mod:`network.ipam` leases addresses from persistent pools under a file lock (stdlib);
- :mod:`network.dns` renders ``resolv.conf`` and ``hosts`` (pure);
- :mod:`network.netns` creates, enters and removes named network namespaces (stdlib, ctypes);
- :mod:`network.records` persists what was made for a network, for tear-down (stdlib);
- :mod:`network.statefile` is the state directory's lock and atomic JSON files (stdlib);
- :mod:`network.links` drives netlink through pyroute2's ``AsyncIPRoute`` (bridge, veth,
  VLAN ports and devices, addresses, routes);
- :mod:`network.bridge` ensures bridges and keeps the ownership rule;
- :mod:`network.vlan` wires VLANs (VLAN-aware bridge port, or Proxmox's sub-interface bridge);
- :mod:`network.provisioner` is the :class:`runtime.provision.Provisioner` (a fast no-op for
  containers without a shim-managed network); :mod:`network.managed` builds the networks;
- :mod:`network.cleanup` is the standard-library tear-down, shared with the ``delete`` action,
  and :mod:`network.rtnl_min` its one hand-made netlink request;
- :mod:`network.stats` reads interface counters inside a namespace (stdlib).

Importing this package imports nothing heavy: pyroute2 loads only when a container really gets a
shim-managed network.
"""
