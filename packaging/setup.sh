#!/usr/bin/env bash
# `make setup`: Debian packages, the project's virtual environment and the launchers that put
# the shim on containerd's PATH. Idempotent; takes well under a second when everything is there.
set -euo pipefail
REPO=${1:?repo} VENV=${2:?venv}
STAMPS="$REPO/.stamps"
mkdir -p "$STAMPS"

# Debian packages. busybox-static builds the demo/test image; kmod, cpio, xz-utils,
# qemu-system-x86 and the compiler tools (the OpenZFS module build, once, cached) serve the
# kernel test host (docs/kernel-test-host.md), mmdebstrap (the Debian 13 root filesystem) and
# zstd (Debian 13's kernel image) its pve9 flavour; containernetworking-plugins (bridge,
# host-local) the CRI tests' pod network (tests/integration/test_cri.py).
PKGS=(containerd runc lxc busybox-static iproute2 zfs-fuse criu qemu-system-x86 kmod cpio
      containernetworking-plugins
      xz-utils e2fsprogs gcc make binutils libc6-dev mmdebstrap zstd lxc-dev)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    # policy-rc.d keeps the packages' services from starting: the tests start what they need.
    # It goes again afterwards (even on failure), unless it was there before.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# proxmox-lxcri make setup (temporary)\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if grep -q "proxmox-lxcri make setup (temporary)" /usr/sbin/policy-rc.d 2>/dev/null; then
        rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
fi

# The virtual environment, rebuilt when pyproject.toml or this script changes. The project is
# installed in "compat" editable mode: a plain path in a .pth file, because setuptools' default
# editable finder costs ~30 ms at every interpreter start, and `start`/`delete` run per task.
want=$(cat "$REPO/pyproject.toml" "$0" | sha256sum | cut -c1-16)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMPS/venv" 2>/dev/null)" != "$want" ]; then
    echo "setup: preparing the virtual environment in $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e "$REPO[dev]" --config-settings editable_mode=compat 2>&1 | grep -v '^WARNING: Location' || true
    "$VENV/bin/python" -c "import google.protobuf, shim" 
    echo "$want" > "$STAMPS/venv"
fi

# The container init (runtime/lxc/owninit.py): a static binary, so that it needs nothing from
# the container's filesystem. Rebuilt when its source is newer.
INIT_SRC="$REPO/runtime/lxc/init/lxcri-init.c" INIT_BIN="$REPO/runtime/lxc/init/lxcri-init"
if [ ! -x "$INIT_BIN" ] || [ "$INIT_SRC" -nt "$INIT_BIN" ]; then
    echo "setup: building $INIT_BIN"
    gcc -static -Os -s -Wall -Wextra -Werror -o "$INIT_BIN.tmp" "$INIT_SRC"
    mv "$INIT_BIN.tmp" "$INIT_BIN"
fi
# The Proxmox backend's CT init (runtime/proxmox/initdir.py): forking, records the status.
PVE_SRC="$REPO/runtime/lxc/init/lxcri-pve-init.c" PVE_BIN="$REPO/runtime/lxc/init/lxcri-pve-init"
if [ ! -x "$PVE_BIN" ] || [ "$PVE_SRC" -nt "$PVE_BIN" ]; then
    echo "setup: building $PVE_BIN"
    gcc -static -Os -s -Wall -Wextra -Werror -o "$PVE_BIN.tmp" "$PVE_SRC"
    mv "$PVE_BIN.tmp" "$PVE_BIN"
fi
# The container monitor (runtime/lxc/backend.py): lxc-start -F with the container's exit status
# as its own; links liblxc (headers from lxc-dev).
MON_SRC="$REPO/runtime/lxc/init/lxcri-start.c" MON_BIN="$REPO/runtime/lxc/init/lxcri-start"
if [ ! -x "$MON_BIN" ] || [ "$MON_SRC" -nt "$MON_BIN" ]; then
    echo "setup: building $MON_BIN"
    gcc -Os -s -Wall -Wextra -Werror -o "$MON_BIN.tmp" "$MON_SRC" -llxc
    mv "$MON_BIN.tmp" "$MON_BIN"
fi

# Byte-compile the project: `start` and `delete` run for every task, and an environment with
# PYTHONDONTWRITEBYTECODE=1 (containerd passes its own on) would otherwise recompile every
# module on every run (~150 ms). The launchers also re-enable writing for later edits.
"$VENV/bin/python" -m compileall -q -j 0 "$REPO/shim" "$REPO/runtime" "$REPO/storage" \
    "$REPO/network" "$REPO/protos" >/dev/null

# Launchers: containerd resolves io.containerd.proxmox.v2 to containerd-shim-proxmox-v2 on its
# PATH (shim-protocol.md section 2.1). They exec the environment's interpreter directly, with
# -S: `start` and `delete` need only the standard library and the project (site's .pth
# processing costs ~4 ms per run); whatever needs site-packages calls site.main() first.
# The same launchers also go to $STAMPS/bin, which the test harness puts first on containerd's
# PATH: tests then run this checkout's shim even when another checkout ran `make setup` last.
mkdir -p "$STAMPS/bin"
install_launcher() {  # name, module, interpreter flags
    local content="#!/bin/sh
# Installed by proxmox-lxcri's 'make setup' from $REPO.
exec $VENV/bin/python $3 -c 'import sys; sys.dont_write_bytecode = False; sys.path.insert(0, \"$REPO\"); from $2 import main; sys.argv[0] = \"$1\"; main()' \"\$@\"
"
    write_if_changed "/usr/local/bin/$1" "$content"
    write_if_changed "$STAMPS/bin/$1" "$content"
}
write_if_changed() {  # path, content (made executable)
    if [ "$(cat "$1" 2>/dev/null)" != "${2%$'\n'}" ]; then
        printf '%s' "$2" > "$1"
        chmod 755 "$1"
    fi
}
# containerd executes the compiled launcher (shim/launcher/lxcri-launcher.c): it hands `start`
# and `delete` to the zygote, which runs them in a fork of its warm interpreter (~6 ms less
# per action than starting Python); without a zygote it executes the Python launcher, which
# lives beside the checkout's launchers in $STAMPS/libexec. That one is a Python script itself
# (a shell in between costs ~0.8 ms per run, measured); -S as above, -P keeps its directory
# out of sys.path. The relay socket's name comes from the project
# (shim.zygote_client.relay_name), for this environment's interpreter and checkout.
mkdir -p "$STAMPS/libexec"
FALLBACK="$STAMPS/libexec/containerd-shim-proxmox-v2"
write_if_changed "$FALLBACK" "#!$VENV/bin/python -SP
# Installed by proxmox-lxcri's 'make setup' from $REPO.
import sys; sys.dont_write_bytecode = False; sys.path.insert(0, \"$REPO\"); from shim.cli import main; sys.argv[0] = \"containerd-shim-proxmox-v2\"; main()
"
RELAY=$("$VENV/bin/python" -SP -c "import sys; sys.path.insert(0, '$REPO'); from shim.zygote_client import relay_name; print(relay_name())")
LAUNCH_SRC="$REPO/shim/launcher/lxcri-launcher.c" LAUNCH_BIN="$STAMPS/launcher/containerd-shim-proxmox-v2"
LAUNCH_FLAGS=("-DLXCRI_FALLBACK=\"$FALLBACK\"" "-DLXCRI_RELAY=\"$RELAY\"")
mkdir -p "$STAMPS/launcher"
if [ ! -x "$LAUNCH_BIN" ] || [ "$LAUNCH_SRC" -nt "$LAUNCH_BIN" ] \
        || [ "$(cat "$STAMPS/launcher/flags" 2>/dev/null)" != "${LAUNCH_FLAGS[*]}" ]; then
    echo "setup: building $LAUNCH_BIN"
    # Static, as the inits: no dynamic loader on the critical path (~0.4 ms per exec).
    gcc -static -Os -s -Wall -Wextra -Werror "${LAUNCH_FLAGS[@]}" -o "$LAUNCH_BIN.tmp" "$LAUNCH_SRC"
    mv "$LAUNCH_BIN.tmp" "$LAUNCH_BIN"
    echo "${LAUNCH_FLAGS[*]}" > "$STAMPS/launcher/flags"
fi
for target in "/usr/local/bin/containerd-shim-proxmox-v2" "$STAMPS/bin/containerd-shim-proxmox-v2"; do
    if ! cmp -s "$LAUNCH_BIN" "$target"; then
        # A new file renamed into place: containerd may be executing the old one.
        cp "$LAUNCH_BIN" "$target.tmp" && chmod 755 "$target.tmp" && mv "$target.tmp" "$target"
    fi
done
install_launcher proxmox-lxcri shim.operator_cli ""
