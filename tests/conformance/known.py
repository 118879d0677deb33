"""The checks that pass on runc and fail on ``proxmox-lxcri``, each with its cause: the one
list that docs/oci-support.md ("OCI runtime-tools validation") and the conformance test share.
The test asserts every entry still fails (strict xfail), so a fix forces its removal here.

Key: (program in ``suite.py``, check description as the program prints it).
"""

from __future__ import annotations

KNOWN: dict[tuple[str, str], str] = {}
