#!/usr/bin/env bash
# `make deb`: a Debian package of the runtime, built with dpkg-deb.
#
# The runtime lives under its own prefix, /usr/lib/proxmox-lxcri: a virtual environment on
# Debian's python3.11 holding the project's packages (shim, runtime, storage, network, protos:
# generic names that must never reach a shared site-packages) and its Python dependencies, so
# installing needs nothing beyond Debian's own packages. The gate script and the compiled init
# go in with the runtime package. Needs PyPI at build time only.
set -euo pipefail
REPO=$(cd "${1:?repo}" && pwd) OUT=$(mkdir -p "${2:?out dir}" && cd "$2" && pwd)
PY=/usr/bin/python3.11            # Debian's interpreter: the package depends on python3.11
PREFIX=/usr/lib/proxmox-lxcri
NAME=proxmox-lxcri
VERSION=$(sed -n 's/^VERSION = "\(.*\)"$/\1/p' "$REPO/shim/cli.py")  # the one place it is written
[ -n "$VERSION" ] || { echo "build-deb: no VERSION in shim/cli.py" >&2; exit 1; }
ARCH=$(dpkg --print-architecture)
[ -x "$PY" ] || { echo "build-deb: $PY missing (apt-get install python3.11 python3-venv)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/lxcri-deb.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
STAGE=$WORK/root

# The init is part of the package: build it from source here, whatever the checkout holds.
mkdir -p "$WORK/src"
git -C "$REPO" ls-files -z | (cd "$REPO" && xargs -0 cp --parents -t "$WORK/src")
gcc -static -Os -s -Wall -Wextra -Werror -o "$WORK/src/runtime/lxc/init/lxcri-init" \
    "$WORK/src/runtime/lxc/init/lxcri-init.c"
gcc -static -Os -s -Wall -Wextra -Werror -o "$WORK/src/runtime/lxc/init/lxcri-pve-init" \
    "$WORK/src/runtime/lxc/init/lxcri-pve-init.c"
# The container monitor links liblxc (the package depends on liblxc1, the headers are lxc-dev's).
gcc -Os -s -Wall -Wextra -Werror -o "$WORK/src/runtime/lxc/init/lxcri-start" \
    "$WORK/src/runtime/lxc/init/lxcri-start.c" -llxc

"$PY" -m venv "$STAGE$PREFIX"
"$STAGE$PREFIX/bin/python" -m pip install -q --disable-pip-version-check --no-compile \
    --no-warn-script-location "$WORK/src" 2>&1 | { grep -v '^WARNING: Location' || true; }
SITE=$("$STAGE$PREFIX/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
SITE_REL=${SITE#"$STAGE"}
# pip, setuptools and the venv's activate scripts serve nothing at run time; their shebangs
# would also name the staging directory.
"$STAGE$PREFIX/bin/python" -m pip uninstall -q -y pip setuptools 2>/dev/null || true
find "$STAGE$PREFIX/bin" -mindepth 1 ! -name 'python*' -delete
chmod 755 "$SITE/runtime/lxc/gate.sh" "$SITE/runtime/lxc/init/lxcri-init" \
    "$SITE/runtime/lxc/init/lxcri-pve-init" \
    "$SITE/runtime/lxc/init/lxcri-start"
# Byte-code compiled now, with the installed path in it: nothing is written under /usr at run
# time, and purge leaves nothing behind.
"$STAGE$PREFIX/bin/python" -m compileall -q -j 0 -s "$STAGE" -p / "$SITE" >/dev/null

# Launchers, as packaging/setup.sh writes them for development: the interpreter with -S, since
# `start` and `delete` need only the standard library and the project; the shim's Python
# launcher is a Python script itself (no shell in between: ~0.8 ms less per action), -P keeping
# its directory out of sys.path.
mkdir -p "$STAGE/usr/bin"
launcher() {  # name, module
    cat > "$STAGE/usr/bin/$1" <<SH
#!/bin/sh
exec $PREFIX/bin/python -S -c 'import sys; sys.path.insert(0, "$SITE_REL"); from $2 import main; sys.argv[0] = "$1"; main()' "\$@"
SH
    chmod 755 "$STAGE/usr/bin/$1"
}
# containerd executes the compiled launcher (shim/launcher/lxcri-launcher.c), which hands
# `start` and `delete` to the zygote and, without one, executes the Python launcher in libexec.
mkdir -p "$STAGE$PREFIX/libexec"
cat > "$STAGE$PREFIX/libexec/containerd-shim-proxmox-v2" <<PY
#!$PREFIX/bin/python -SP
import sys; sys.path.insert(0, "$SITE_REL"); from shim.cli import main; sys.argv[0] = "containerd-shim-proxmox-v2"; main()
PY
chmod 755 "$STAGE$PREFIX/libexec/containerd-shim-proxmox-v2"
# The relay socket's name, for the installed interpreter and site-packages (not the stage's).
RELAY=$("$STAGE$PREFIX/bin/python" -SP -c "import sys; sys.path.insert(0, '$SITE'); from shim.zygote_client import relay_name; print(relay_name('$PREFIX/bin/python', '$SITE_REL'))")
gcc -static -Os -s -Wall -Wextra -Werror "-DLXCRI_FALLBACK=\"$PREFIX/libexec/containerd-shim-proxmox-v2\"" \
    "-DLXCRI_RELAY=\"$RELAY\"" -o "$STAGE/usr/bin/containerd-shim-proxmox-v2" \
    "$WORK/src/shim/launcher/lxcri-launcher.c"
launcher proxmox-lxcri shim.operator_cli

install -D -m 644 "$REPO/packaging/deb/config.toml" "$STAGE/etc/proxmox-lxcri/config.toml"
DOC=$STAGE/usr/share/doc/$NAME
install -D -m 644 "$REPO/packaging/containerd-runtime.toml" "$DOC/examples/containerd-runtime.toml"
install -D -m 644 "$REPO/packaging/runtimeclass.yaml" "$DOC/examples/runtimeclass.yaml"
install -D -m 644 "$REPO/packaging/runtimeclass-proxmox-ct.yaml" \
    "$DOC/examples/runtimeclass-proxmox-ct.yaml"
install -D -m 644 "$REPO/packaging/deb/proxmox-ct.toml" "$DOC/examples/proxmox-ct.toml"
for f in README.md docs/configuration.md docs/cli.md docs/operations.md docs/proxmox.md; do
    gzip -9n < "$REPO/$f" > "$DOC/$(basename "$f").gz"
done
install -m 644 "$REPO/LICENSE" "$DOC/copyright"

mkdir -p "$STAGE/DEBIAN"
echo /etc/proxmox-lxcri/config.toml > "$STAGE/DEBIAN/conffiles"
SIZE=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
cat > "$STAGE/DEBIAN/control" <<CTL
Package: $NAME
Version: $VERSION
Architecture: $ARCH
Maintainer: Proxmox LXCRI developers <noreply@proxmox-lxcri.invalid>
Installed-Size: $SIZE
Depends: python3.11, lxc, liblxc1, libseccomp2, libc6
Recommends: containerd, criu
Suggests: zfsutils-linux | zfs-fuse, runc
Section: admin
Priority: optional
Homepage: https://github.com/proxmox-lxcri/proxmox-lxcri
Description: containerd shim v2 running OCI containers as LXC containers
 containerd loads it as runtime io.containerd.proxmox.v2 (containerd-shim-proxmox-v2);
 Kubernetes reaches it through a RuntimeClass (see the examples in /usr/share/doc). The
 operator command is proxmox-lxcri.
CTL
# Byte-code that a newer interpreter patch level may still write goes with the package.
cat > "$STAGE/DEBIAN/postrm" <<'SH'
#!/bin/sh
set -e
if [ "$1" = remove ] || [ "$1" = purge ]; then
    rm -rf /usr/lib/proxmox-lxcri
fi
if [ "$1" = purge ]; then
    rmdir /etc/proxmox-lxcri 2>/dev/null || true
fi
SH
chmod 755 "$STAGE/DEBIAN/postrm"

DEB=$OUT/${NAME}_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$DEB" >/dev/null
echo "$DEB"
