#!/bin/sh
# The lxc.hook.start-host half of the gate: reports the host PID of the container's first
# process.
#
# LXC runs this on the host after the container is set up and immediately before its init runs,
# with LXC_PID (host PID of the container's PID 1) in the environment (man
# lxc.container.conf, lxc.hook.start-host; DESIGN.md section 5.1). It writes LXC_PID to the
# gate-ready FIFO and returns: the init itself (runtime/lxc/init/lxcri-init.c) then runs its
# set-up, reports "ready" or its error on the same FIFO and waits for "go" (runtime/lxc/gate.py).
# The init cannot know its host PID (it is PID 1 of its own PID namespace); this hook can.
# Usage (set by runtime/lxc/config.py): sh gate.sh <init dir> <name> lxc start-host
set -u
# LXC reads the hook's stdout into its log; the shell's own errors go there too instead of the
# container's stderr (which this process inherits).
exec 2>&1
# An O_RDWR open of a FIFO never blocks (fifo(7)), whether or not the backend still reads.
exec 3<>"$1/gate-ready" || exit 1
printf '%s\n' "${LXC_PID:?}" >&3
