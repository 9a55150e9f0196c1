"""Where a batch-64 search spends its time: facebank's steps timed one by one
in process, next to raw FAISS with the same parameters and the floor of a gRPC
call carrying the same request (a Python echo server with a canned 640-match
reply, in its own process as `facebank serve` is).

Batches run one after another, as a client sends them, so each step pays the
cache misses it pays in serving (the vector search has just swept the caches).
Raw FAISS is also timed with a whole facebank request run between its batches:
what the rest of a request costs the search in caches."""

from __future__ import annotations

import contextlib
import functools
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import search
from bench.synthetic import gallery

BATCHES, ROUNDS = 40, 3


def run(quick: bool, log=print) -> dict:
    n = (search.SIZES or [20_000 if quick else 100_000])[0]
    rng = np.random.default_rng(n)
    g = gallery(n // search.FACES_PER_ID, seed=1)
    x = g.faces(np.repeat(np.arange(n // search.FACES_PER_ID), search.FACES_PER_ID), rng)
    batches = [g.faces(rng.integers(0, n // search.FACES_PER_ID, 64), rng) for _ in range(BATCHES)]
    log(f"breakdown: batch 64 over {n:,} vectors")
    with tempfile.TemporaryDirectory() as tmp:
        engine = search.load_facebank(Path(tmp) / "data", x)
        segment = engine.store.segments.get(engine.store.collection("default").id, "enrolled")
        index = segment.index
        raw = search._raw_faiss(x, {"kind": index.kind, "nlist": getattr(index, "nlist", 0), "nprobe": getattr(index, "default_nprobe", 0)})
        requests = [search._request(b, packed=True) for b in batches]
        out = {"n": n, "batch": 64, "index": index.kind}
        for _ in range(ROUNDS):  # each keeps its best round
            faiss_ms = _per_batch_ms(lambda i: raw.search(batches[i], 10))
            faiss_k40_ms = _per_batch_ms(lambda i: raw.search(batches[i], 40))  # as many hits as facebank asks for
            segment_ms = _per_batch_ms(lambda i: segment.search(batches[i], 40))  # facebank's index alone, back to back
            # raw FAISS timed while a whole facebank request runs (untimed) between its batches, as in serving
            faiss_k40_between_ms = _per_batch_ms(lambda i: raw.search(batches[i], 40),
                                                 between=lambda i: engine.search.search_by_embedding(requests[i]))
            with _timed_steps(segment) as steps:
                total_ms = _per_batch_ms(lambda i: engine.search.search_by_embedding(requests[i]), after_warm_up=steps.clear)
            searched = steps.pop("queries searched")
            if "total_ms" not in out or total_ms < out["total_ms"]:
                out.update(faiss_k10_ms=faiss_ms, faiss_k40_ms=faiss_k40_ms, segment_k40_ms=segment_ms,
                           faiss_k40_between_requests_ms=faiss_k40_between_ms, total_ms=total_ms,
                           steps_ms={k: round(v * 1000 / BATCHES, 3) for k, v in steps.items()},
                           searched_again=round(searched / (BATCHES * 64) - 1, 4))
        engine.close()
    out["grpc_floor_ms"] = _grpc_floor_ms(requests[0])
    python_ms = sum(v for k, v in out["steps_ms"].items() if k != "index search")
    out["python_work_ms"] = round(python_ms, 3)
    out["search_plus_floor_vs_faiss"] = round(out["faiss_k10_ms"] / (out["steps_ms"]["index search"] + out["grpc_floor_ms"]), 3)
    log(f"  {out}")
    return {"search_breakdown": out}


def _per_batch_ms(call, after_warm_up=lambda: None, between=lambda i: None) -> float:
    """Mean time of `call` over the batches; `between` runs after each, untimed."""
    call(0)  # warm up
    between(0)
    after_warm_up()  # the steps timed count the measured batches only
    spent = 0.0
    for i in range(BATCHES):
        started = time.perf_counter()
        call(i)
        spent += time.perf_counter() - started
        between(i)
    return round(spent * 1000 / BATCHES, 3)


@contextlib.contextmanager
def _timed_steps(segment):
    """Time each step of a search where the server calls it, and put them back after."""
    from facebank.index import identity_search
    from facebank.server import search as search_service
    from facebank.server import validate

    steps: dict[str, float] = {}

    def timed(name, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                steps[name] = steps.get(name, 0.0) + time.perf_counter() - started
        return wrapper

    patches = [(validate, "packed_embeddings", "checking the queries"), (identity_search, "group_faces", "grouping into identities"),
               (identity_search, "_alive", "reading their records"), (identity_search, "_assemble", "assembling the answer"),
               (search_service, "packed_matches", "packing it")]
    originals = [(module, attr, getattr(module, attr)) for module, attr, _ in patches]
    for module, attr, name in patches:
        setattr(module, attr, timed(name, getattr(module, attr)))
    search = timed("index search", segment.search)

    def counted(queries, *args, **kwargs):  # queries an identity's many faces sent to a deeper second search count twice
        steps["queries searched"] = steps.get("queries searched", 0) + len(queries)
        return search(queries, *args, **kwargs)

    segment.search = counted  # an instance attribute over the method
    try:
        yield steps
    finally:
        for module, attr, fn in originals:
            setattr(module, attr, fn)
        del segment.search


def _grpc_floor_ms(request, calls: int = 500) -> float:
    import grpc

    from facebank.v1 import facebank_pb2 as pb

    server = subprocess.Popen([sys.executable, "-m", "bench.echo_server"], stdout=subprocess.PIPE)
    try:
        port = int(server.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/facebank.v1.Search/SearchByEmbedding", request_serializer=pb.SearchByEmbeddingRequest.SerializeToString,
                                       response_deserializer=pb.SearchByEmbeddingResponse.FromString)
            latencies = []
            for _ in range(calls):
                started = time.perf_counter()
                call(request)
                latencies.append(time.perf_counter() - started)
        return round(float(np.median(latencies[50:])) * 1000, 3)
    finally:
        server.terminate()
        server.wait()
