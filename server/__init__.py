"""The gRPC server and the engine behind it.

FAISS parallelises with OpenMP, whose default is to spin for a while after
each parallel region. In a server every RPC thread gets its own OpenMP team,
and those spinning threads take the cores the next request needs: on 2 cores a
single-query search over gRPC went from about 2 ms to 10-15 ms p50, worse the
longer the server ran. Waiting passively is set here, before FAISS loads
(libgomp reads it once, at load); an explicit OMP_WAIT_POLICY wins."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
