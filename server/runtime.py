"""Process-wide settings a server needs, applied at start-up (never at import).

FAISS parallelises with OpenMP, whose default is to spin for a while after
each parallel region. In a server every RPC thread gets its own OpenMP team,
and those spinning threads take the cores the next request needs: on 2 cores a
single-query search over gRPC went from about 2 ms to 10-15 ms p50, worse the
longer the server ran. libgomp reads OMP_WAIT_POLICY once, when it loads, so
`facebank serve` calls this before anything imports FAISS; an explicit
OMP_WAIT_POLICY wins.
"""

from __future__ import annotations

import os
import sys


def configure_process() -> None:
    """Idempotent. Waiting passively only takes effect if FAISS is not loaded yet."""
    if "faiss" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from facebank.index.vectors import tune_faiss

    tune_faiss()
