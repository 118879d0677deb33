#!/bin/sh
# The lxc.hook.start-host gate: holds a created container before its init runs.
#
# LXC runs this on the host after the container is set up and immediately before its init
# runs, with LXC_PID (host PID of the container's PID 1) in the environment (man
# lxc.container.conf, lxc.hook.start-host; DESIGN.md section 5.1). It reports LXC_PID and waits
# for "go". Anything else (EOF because every writer closed: the backend died or aborted) makes
# it fail, and LXC then aborts the start and kills the init: nothing waits forever on a dead
# backend. Usage (set by runtime/lxc/config.py): sh gate.sh <dir> [--hold] <name> lxc start-host
set -u
# LXC reads the hook's stdout into its log; the shell's own errors go there too instead of the
# container's stderr (which this process inherits).
exec 2>&1
dir=$1
# Open the start FIFO before reporting the PID, so a "go" written as soon as the PID arrives is
# already buffered in an open FIFO and cannot be lost. The backend holds a writer (O_RDWR) from
# before lxc-execute runs, so this open does not block.
# With --hold (the proxmox-lxcri CLI: the creating process exits right after `create`), the
# gate holds a writer itself (O_RDWR never blocks, fifo(7)): it never reads EOF and waits for
# `start` ("go") or `delete` ("abort") from later processes.
if [ "${2:-}" = --hold ]; then
	exec 4<>"$dir/gate-start" || exit 1
else
	exec 4<"$dir/gate-start" || exit 1
fi
# An O_RDWR open of a FIFO never blocks (fifo(7)), whether or not the backend still reads.
exec 3<>"$dir/gate-ready" || exit 1
printf '%s\n' "${LXC_PID:?}" >&3
exec 3>&-
IFS= read -r go <&4 || exit 1
[ "$go" = go ] || exit 1
exit 0
