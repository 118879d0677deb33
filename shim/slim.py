"""Import asyncio without its TLS support, before anything else does.

The daemon speaks ttrpc on unix sockets only, yet asyncio imports ``ssl`` (and with it OpenSSL)
at import time: about 5 MB of RSS and 8 ms per daemon, measured here. asyncio supports
Pythons built without ``ssl`` (its modules then hold ``ssl = None``), so ``ssl`` is marked
absent while asyncio is imported and unmarked after, so that code which needs TLS later
(pyroute2 imports it) still gets the real module.
"""

from __future__ import annotations

import sys


def import_asyncio_without_tls() -> None:
    if "asyncio" in sys.modules or "ssl" in sys.modules:
        return  # too late, or already loaded by someone who needs it: nothing to save
    sys.modules["ssl"] = None  # type: ignore[assignment]
    try:
        import asyncio  # noqa: F401
    finally:
        del sys.modules["ssl"]
