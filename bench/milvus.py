"""facebank with its vectors in Milvus (`serve --vectors milvus://...`) against
pymilvus calling the same Milvus collection directly, with facebank on FAISS in
the same run for reference. A real Milvus 2.3.5 standalone server (PyPI
`milvus`, embedded) runs on this machine beside the bench, so on 2 cores the
three share the CPU with Milvus itself: read the ratios, not the absolutes.

Per size: bulk-load throughput through the engine (batched inserts), single
queries and batches of 64 (top-4 identities: facebank asks the index for the 40
nearest faces, and so does the direct call; both at HNSW ef 512), recall@10 of faces against
exact search, forget latency (on Milvus: delete, a Strong query that finds
none of the faces, flush and a compaction request, before the answer), and
batch-64 throughput through one search node and through two (`serve --role
search`, each its own process, at Strong consistency). On 2 cores shared with
Milvus, two nodes show that the topology works more than how it scales."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from bench.search import enroll_synthetic
from bench.synthetic import gallery

SIZES: list[int] = []   # --milvus-sizes; default 100,000 (20,000 with --quick)
PER_ID = 10
TOP_K = 4      # identities per query: facebank asks the index for max(40, 4 * top_k) = 40 faces, in one call
K_FACES = 40   # ... and so does the direct call
EF = 512       # HNSW ef for both (the collection's ef_search): at Milvus's ef 128 recall@10 was 0.84 here
FORGETS = 20
NODE_CLIENTS = 4
NODE_SECONDS = 20


def run(quick: bool, log=print) -> dict:
    from milvus import MilvusServer

    sizes = SIZES or ([20_000] if quick else [100_000])
    rows, forgets, loads, nodes = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        server = MilvusServer()
        server.set_base_dir(str(Path(tmp) / "milvus"))
        server.start()
        spec = f"milvus://127.0.0.1:{server.listen_port}"
        try:
            for n in sizes:
                r, f, load, node = _one_size(n, spec, Path(tmp), log)
                rows += r
                forgets += f
                loads += load
                nodes += node
        finally:
            server.stop()
    out = {"milvus": rows, "milvus_forget": forgets, "milvus_load": loads, "milvus_nodes": nodes}
    for n in sizes:
        fb = next((r for r in rows if r["n"] == n and r["system"] == "facebank-milvus" and r["batch"] == 64), None)
        direct = next((r for r in rows if r["n"] == n and r["system"] == "pymilvus-direct" and r["batch"] == 64), None)
        if fb and direct:
            out.setdefault("milvus_overhead", []).append(
                {"n": n, "batch": 64, "overhead": round(fb["ms_per_query"] / direct["ms_per_query"] - 1, 3),
                 "recall_facebank": fb["recall_at_10"], "recall_direct": direct["recall_at_10"]})
    return out


def _one_size(n: int, spec: str, tmp: Path, log) -> tuple[list, list, list, list]:
    from facebank.server.config import ServerConfig
    from facebank.server.engine import Engine
    from facebank.v1 import facebank_pb2 as pb

    n_ids = n // PER_ID
    g = gallery(n_ids, seed=11)
    rng = np.random.default_rng(1011)
    x = g.faces(np.repeat(np.arange(n_ids), PER_ID), rng)
    probe_ids = rng.choice(n_ids, size=640, replace=False)
    q = g.faces(probe_ids, rng)
    import faiss

    truth = faiss.knn(q, x, 10, faiss.METRIC_INNER_PRODUCT)[1]   # exact top-10 faces (rows of x = face id - 1), without a q x n matrix
    rows, forgets, loads, nodes = [], [], [], []
    for backend in ("milvus", "faiss"):
        engine = Engine(ServerConfig(data_dir=tmp / f"{backend}-{n}", listen="127.0.0.1:0", background=True,
                                     vectors=spec if backend == "milvus" else "faiss", compact_after_forget_s=1e9))
        try:
            engine.collections.create_collection(pb.CreateCollectionRequest(name="bench", index=pb.IndexOptions(ef_search=EF)))
            log(f"milvus: loading {n:,} faces into facebank-{backend}")
            t0 = time.perf_counter()
            enroll_synthetic(engine, "bench", x, PER_ID, chunk=1000)
            engine.maintenance.clean_now()   # FAISS: the IVF rebuild past 50k; Milvus: a flush
            segment = engine.store.segment(engine.store.collection("bench").id)
            inserted_s = time.perf_counter() - t0
            indexed = _wait_indexed(segment.index, log) if backend == "milvus" else True
            load_s = time.perf_counter() - t0
            loads.append({"n": n, "system": f"facebank-{backend}", "load_s": round(load_s, 1), "faces_per_s": round(n / load_s, 1),
                          "inserted_s": round(inserted_s, 1), "index": segment.index.kind, "index_complete": indexed})

            def facebank_search(batch: np.ndarray) -> list[list[int]]:
                req = pb.SearchByEmbeddingRequest(collection="bench", queries_f32=np.ascontiguousarray(batch, "<f4").tobytes(),
                                                  options=pb.SearchOptions(top_k=TOP_K, threshold=-1.0))
                return [[f - 1 for m in r.matches for f in m.face_ids][:10] for r in engine.search.search_by_embedding(req).results]

            systems = {f"facebank-{backend}": facebank_search}
            if backend == "milvus":
                systems["pymilvus-direct"] = _direct(segment.index)
            rows += _measure(systems, n, q, truth)
            if backend == "milvus":
                nodes += _nodes(engine, spec, q, n, log)
            latencies = []
            for ident in probe_ids[:FORGETS].tolist():
                t0 = time.perf_counter()
                engine.identities.forget(pb.ForgetRequest(collection="bench", identity_id=str(ident)))
                latencies.append(1000 * (time.perf_counter() - t0))
            forgets.append({"n": n, "system": f"facebank-{backend}", "forgets": len(latencies),
                            "p50_ms": round(float(np.percentile(latencies, 50)), 1), "p99_ms": round(float(np.percentile(latencies, 99)), 1)})
            log(f"milvus: facebank-{backend} at {n:,}: load {load_s:.0f} s, forget p50 {forgets[-1]['p50_ms']} ms")
            if backend == "milvus":
                segment.index.client.release_collection(segment.index.name)   # Milvus's memory back before the FAISS reference loads
        finally:
            engine.close()
    return rows, forgets, loads, nodes


def _nodes(engine, spec: str, q: np.ndarray, n: int, log) -> list[dict]:
    """Batch-64 searches from NODE_CLIENTS client threads through one search node, then
    two (`serve --role search`, each its own process), against the same Milvus."""
    from facebank.index.milvus_publish import publish

    publish(engine.store)  # the bench collection, as it is now
    prefix = engine.store.milvus_prefix
    started = [_start_node(spec, prefix) for _ in range(2)]
    out = []
    try:
        for count in (1, 2):
            addresses = [address for _, address in started[:count]]
            log(f"milvus: {NODE_CLIENTS} clients through {count} search node(s) at {n:,}")
            out.append({"n": n, "nodes": count, "clients": NODE_CLIENTS, **_drive(addresses, q)})
    finally:
        for proc, _ in started:
            proc.terminate()
            proc.wait(timeout=60)
    return out


def _start_node(spec: str, prefix: str):
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "facebank", "serve", "--role", "search", "--vectors", spec, "--primary-id", prefix,
           "--listen", f"127.0.0.1:{port}", "--http", "off", "--threads", "1", "--log-level", "WARNING"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = proc.stdout.readline().decode()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"search node did not start: {line!r}")
    return proc, f"127.0.0.1:{port}"


def _drive(addresses: list[str], q: np.ndarray) -> dict:
    """NODE_SECONDS of batch-64 searches, client i sending to node i mod len(addresses)."""
    import threading

    from facebank.client import Client
    from facebank.transport import GrpcTransport

    done, latencies, errors = [0] * NODE_CLIENTS, [[] for _ in range(NODE_CLIENTS)], []
    stop = time.monotonic() + NODE_SECONDS

    def client(i: int) -> None:
        with Client(GrpcTransport(addresses[i % len(addresses)])) as fb:
            j = i
            while time.monotonic() < stop:
                batch = q[(64 * j) % (len(q) - 64):][:64]
                t0 = time.perf_counter()
                r = fb.search_embeddings(batch, collection="bench", top_k=TOP_K, threshold=0.0, packed=True)
                latencies[i].append(time.perf_counter() - t0)
                if not r.packed.identity_ids:
                    errors.append("empty answer")
                done[i] += len(batch)
                j += NODE_CLIENTS

    threads = [threading.Thread(target=client, args=(i,)) for i in range(NODE_CLIENTS)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    ms = 1000 * np.concatenate([np.asarray(x) for x in latencies])
    return {"queries_per_s": round(sum(done) / seconds, 1), "batch": 64, "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "empty_answers": len(errors)}


def _direct(index):
    """pymilvus on the very collection facebank uses, with the same search parameters, at
    Milvus's default consistency (Bounded; facebank reads at Session: its own writes visible)."""
    def search(batch: np.ndarray) -> list[list[int]]:
        hits = index.client.search(index.name, data=batch.tolist(), limit=K_FACES, anns_field="vector", consistency_level="Bounded",
                                   search_params={"metric_type": "IP", "params": {"ef": EF}})
        return [[int(h["id"]) - 1 for h in found][:10] for found in hits]

    return search


def _measure(systems: dict, n: int, q: np.ndarray, truth: np.ndarray) -> list[dict]:
    """Each batch goes to every system in turn, so that all see Milvus in the same state
    (it seals, indexes and hands off segments in the background)."""
    out = []
    for batch in (1, 64):
        count = 200 if batch == 1 else len(q)
        found = {name: [] for name in systems}
        seconds = dict.fromkeys(systems, 0.0)
        for start in range(0, count, batch):
            for name, search in systems.items():
                t0 = time.perf_counter()
                found[name] += search(q[start : start + batch])
                seconds[name] += time.perf_counter() - t0
        for name in systems:
            recall = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found[name], truth[:count])]))
            out.append({"system": name, "n": n, "batch": batch, "queries": count, "ms_per_query": round(1000 * seconds[name] / count, 3),
                        "qps": round(count / seconds[name], 1), "recall_at_10": round(recall, 4)})
    return out


def _wait_indexed(index, log, timeout_s: float = 3600) -> bool:
    """Milvus builds the HNSW of sealed segments in the background: measure on a built
    index (at 1M on 2 shared cores that took more than 15 minutes). False if it was not
    built within timeout_s (the results say so)."""
    deadline = time.monotonic() + timeout_s
    complete = False
    while time.monotonic() < deadline:
        info = index.client.describe_index(index.name, "vector")
        if info.get("pending_index_rows", 0) == 0 and info.get("indexed_rows", 0) >= info.get("total_rows", 0):
            complete = True
            break
        time.sleep(2)
    else:
        log("milvus: the index was still building when the measurement started")
    # Sealed segments are handed to the query node with their index in the background; until
    # then a search reads the growing data through Milvus's interim index. Load it afresh.
    index.client.release_collection(index.name)
    index.client.load_collection(index.name)
    return complete
