"""A small cffi (ABI mode) binding of OpenZFS's libzfs_core: create, snapshot, clone, exists,
destroy.

libzfs_core is OpenZFS's stable, thin ioctl layer over /dev/zfs (one call per operation, errno
results, no libzfs handle or mnttab scanning). ABI mode dlopens the Debian shared objects
(``libzfs_core.so.3`` and ``libnvpair.so.3`` from libzfs4linux and libnvpair3linux, OpenZFS 2.1)
so nothing is compiled. Names are bytes on the C side; this module takes ``str``.

Properties go to the kernel unconverted, as libzfs_core does: numeric *and index* properties
are integers (``quota=1 << 30``; ``compression`` would be its enum value, not "lz4"), string
and user properties (``org.example:key``) are strings. The kernel answers EINVAL otherwise.

It needs the ZFS kernel module (/dev/zfs): on this project's dev host that exists only inside
the kernel test host (tests/kernelhost); ``libzfs_core_init`` fails with ENOENT elsewhere
(environment.md, section 3).
"""

from __future__ import annotations

import errno
import importlib
import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any

# Declarations from OpenZFS 2.1 include/libzfs_core.h and include/sys/nvpair.h. Only what this
# module calls; ABI mode needs just the prototypes and the enum values.
_CDEF = """
typedef struct nvlist nvlist_t;
typedef struct nvpair nvpair_t;
typedef unsigned int uint_t;
typedef int boolean_t;

int nvlist_alloc(nvlist_t **nvlp, uint_t nvflag, int kmflag);
void nvlist_free(nvlist_t *nvl);
int nvlist_add_boolean(nvlist_t *nvl, const char *name);
int nvlist_add_string(nvlist_t *nvl, const char *name, const char *val);
int nvlist_add_uint64(nvlist_t *nvl, const char *name, uint64_t val);
nvpair_t *nvlist_next_nvpair(nvlist_t *nvl, nvpair_t *nvp);
char *nvpair_name(nvpair_t *nvp);
int nvpair_value_int32(nvpair_t *nvp, int32_t *val);

typedef enum { LZC_DATSET_TYPE_ZFS = 2, LZC_DATSET_TYPE_ZVOL } lzc_dataset_type;

int libzfs_core_init(void);
void libzfs_core_fini(void);
int lzc_create(const char *fsname, lzc_dataset_type type, nvlist_t *props,
               uint8_t *wkeydata, uint_t wkeylen);
int lzc_snapshot(nvlist_t *snaps, nvlist_t *props, nvlist_t **errlist);
int lzc_clone(const char *fsname, const char *origin, nvlist_t *props);
boolean_t lzc_exists(const char *dataset);
int lzc_destroy(const char *fsname);
int lzc_destroy_snaps(nvlist_t *snaps, boolean_t defer, nvlist_t **errlist);
"""

NV_UNIQUE_NAME = 1  # nvpair.h: at most one pair per name
KM_SLEEP = 0  # libnvpair in user space ignores kmflag; 0 is what libzfs passes

LIBZFS_CORE = "libzfs_core.so.3"
LIBNVPAIR = "libnvpair.so.3"

PropValue = int | str


class ZfsError(OSError):
    """A libzfs_core call failed. ``errno`` is the call's result; ``details`` maps names to the
    per-dataset errno that lzc_snapshot/lzc_destroy_snaps report in their error list."""

    def __init__(self, code: int, op: str, name: str,
                 details: Mapping[str, int] | None = None) -> None:
        super().__init__(code, f"{op}({name}): {os.strerror(code)}")
        self.op = op
        self.name = name
        self.details = dict(details or {})


class LibZfsCore:
    """One dlopen of libzfs_core and libnvpair. Thread-safe: libzfs_core itself is (it opens
    /dev/zfs once, refcounted by libzfs_core_init/fini), and nvlists are per call."""

    def __init__(self, libzfs_core: str = LIBZFS_CORE, libnvpair: str = LIBNVPAIR) -> None:
        # Imported here so that importing this module costs nothing where ZFS is not used.
        cffi: Any = importlib.import_module("cffi")
        self._ffi: Any = cffi.FFI()
        self._ffi.cdef(_CDEF)
        self._nv: Any = self._ffi.dlopen(libnvpair)
        self._lzc: Any = self._ffi.dlopen(libzfs_core)
        self._lock = threading.Lock()
        self._open = False

    # ------------------------------------------------------------------ life cycle

    def init(self) -> None:
        """libzfs_core_init: opens /dev/zfs. ENOENT means no ZFS kernel module."""
        with self._lock:
            if self._open:
                return
            rc = int(self._lzc.libzfs_core_init())
            if rc != 0:
                raise ZfsError(rc, "libzfs_core_init", "/dev/zfs")
            self._open = True

    def close(self) -> None:
        with self._lock:
            if self._open:
                self._lzc.libzfs_core_fini()
                self._open = False

    def __enter__(self) -> LibZfsCore:
        self.init()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ nvlists

    def _nvlist(self) -> Any:
        out = self._ffi.new("nvlist_t **")
        rc = int(self._nv.nvlist_alloc(out, NV_UNIQUE_NAME, KM_SLEEP))
        if rc != 0:
            raise ZfsError(rc, "nvlist_alloc", "")
        return self._ffi.gc(out[0], self._nv.nvlist_free)

    def _props(self, props: Mapping[str, PropValue] | None) -> Any:
        if not props:
            return self._ffi.NULL
        nvl = self._nvlist()
        for key, value in props.items():
            # bool before int: bool is an int subclass, and ZFS wants on/off strings for it.
            if isinstance(value, bool):
                rc = self._nv.nvlist_add_string(nvl, key.encode(), b"on" if value else b"off")
            elif isinstance(value, int):
                rc = self._nv.nvlist_add_uint64(nvl, key.encode(), value)
            else:
                rc = self._nv.nvlist_add_string(nvl, key.encode(), value.encode())
            if rc != 0:
                raise ZfsError(int(rc), "nvlist_add", key)
        return nvl

    def _names(self, names: Iterable[str]) -> tuple[Any, list[str]]:
        nvl = self._nvlist()
        listed = list(names)
        for n in listed:
            rc = int(self._nv.nvlist_add_boolean(nvl, n.encode()))
            if rc != 0:
                raise ZfsError(rc, "nvlist_add_boolean", n)
        return nvl, listed

    def _errlist(self, errlist: Any) -> dict[str, int]:
        out: dict[str, int] = {}
        nvl = errlist[0]
        if nvl == self._ffi.NULL:
            return out
        try:
            val = self._ffi.new("int32_t *")
            pair = self._nv.nvlist_next_nvpair(nvl, self._ffi.NULL)
            while pair != self._ffi.NULL:
                name = self._ffi.string(self._nv.nvpair_name(pair)).decode()
                if self._nv.nvpair_value_int32(pair, val) == 0:
                    out[name] = int(val[0])
                pair = self._nv.nvlist_next_nvpair(nvl, pair)
        finally:
            self._nv.nvlist_free(nvl)
        return out

    def _check(self, rc: int, op: str, name: str,
               details: Mapping[str, int] | None = None) -> None:
        if rc != 0:
            raise ZfsError(rc, op, name, details)

    def _need_init(self) -> None:
        if not self._open:
            self.init()

    # ------------------------------------------------------------------ operations

    def create(self, name: str, props: Mapping[str, PropValue] | None = None) -> None:
        """Create filesystem ``name`` (not mounted: mounting is the zfs command's job)."""
        self._need_init()
        rc = self._lzc.lzc_create(name.encode(), self._lzc.LZC_DATSET_TYPE_ZFS,
                                  self._props(props), self._ffi.NULL, 0)
        self._check(int(rc), "lzc_create", name)

    def snapshot(self, names: Iterable[str], props: Mapping[str, PropValue] | None = None) -> None:
        """Atomically create the snapshots ``names`` ("pool/fs@snap"; all in one pool)."""
        self._need_init()
        nvl, listed = self._names(names)
        if not listed:
            return
        errlist = self._ffi.new("nvlist_t **")
        rc = int(self._lzc.lzc_snapshot(nvl, self._props(props), errlist))
        self._check(rc, "lzc_snapshot", ",".join(listed), self._errlist(errlist))

    def clone(self, name: str, origin: str,
              props: Mapping[str, PropValue] | None = None) -> None:
        """Create filesystem ``name`` as a clone of snapshot ``origin``."""
        self._need_init()
        rc = int(self._lzc.lzc_clone(name.encode(), origin.encode(), self._props(props)))
        self._check(rc, "lzc_clone", name)

    def exists(self, name: str) -> bool:
        """Whether dataset or snapshot ``name`` exists."""
        self._need_init()
        return bool(self._lzc.lzc_exists(name.encode()))

    def destroy(self, name: str) -> None:
        """Destroy dataset or snapshot ``name`` (it must have no children, clones or mounts)."""
        self._need_init()
        if "@" in name:
            self.destroy_snapshots([name])
            return
        self._check(int(self._lzc.lzc_destroy(name.encode())), "lzc_destroy", name)

    def destroy_snapshots(self, names: Iterable[str], defer: bool = False) -> None:
        self._need_init()
        nvl, listed = self._names(names)
        if not listed:
            return
        errlist = self._ffi.new("nvlist_t **")
        rc = int(self._lzc.lzc_destroy_snaps(nvl, int(defer), errlist))
        self._check(rc, "lzc_destroy_snaps", ",".join(listed), self._errlist(errlist))


def is_missing_module(err: OSError) -> bool:
    """True for the libzfs_core_init error of a host without the ZFS module (no /dev/zfs)."""
    return err.errno == errno.ENOENT
