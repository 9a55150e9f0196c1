"""facebank: a self-hosted face identification database. This package is its Python SDK.

    import facebank
    fb = facebank.connect()          # FACEBANK_SERVER, else 127.0.0.1:50051
    fb.enroll("alice", ["alice.jpg"])
    print(fb.search("group.jpg"))
"""

from facebank.client import Client, connect, open_local
from facebank.packed import MatchArrays
from facebank.errors import FacebankError

__all__ = ["Client", "FacebankError", "MatchArrays", "connect", "open_local"]
__version__ = "0.1.0"
