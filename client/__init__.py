"""facebank: a self-hosted face identification database. This package is its Python SDK.

    import facebank
    fb = facebank.connect()          # FACEBANK_SERVER, else 127.0.0.1:50051
    fb.enroll("alice", ["alice.jpg"])
    print(fb.search("group.jpg"))

The SDK's names are imported on first use, so that the server's layers
(`facebank.index`, `facebank.embedder`), which live under this package name,
load neither the SDK nor grpc.
"""

from __future__ import annotations

import importlib

__all__ = ["Client", "FacebankError", "MatchArrays", "connect", "open_local"]
__version__ = "0.1.0"

_EXPORTS = {
    "Client": "facebank.client", "connect": "facebank.client", "open_local": "facebank.client",
    "MatchArrays": "facebank.packed", "FacebankError": "facebank.errors",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'facebank' has no attribute {name!r}")
