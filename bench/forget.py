"""Forget / retain, in the spirit of MUFAC: on a synthetic identity-structured
collection in an IVF index, forget a random 1% of the identities as a sequence
of requests while searches run, then measure what the unlearning literature
measures: the forget set must be unrecognisable (rank-1 hit rate 0) and the
retain set served as before (rank-1 accuracy and recall@10 within 0.1 points).
Recall@10 is over faces (each identity has ten), against exact search."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.search import enroll_synthetic
from bench.synthetic import gallery


def _exact_faces(x: np.ndarray, alive: np.ndarray, q: np.ndarray, k: int = 10) -> np.ndarray:
    """Exact top-k faces (row numbers of x) among alive faces."""
    out = np.zeros((len(q), k), np.int64)
    dead = ~alive
    for start in range(0, len(q), 128):
        sims = q[start : start + 128] @ x.T
        sims[:, dead] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(sims, top, axis=1).argsort(axis=1)[:, ::-1]
        out[start : start + len(sims)] = np.take_along_axis(top, order, axis=1)
    return out


def run(quick: bool, log=print) -> dict:
    from facebank.server.config import ServerConfig
    from facebank.server.engine import Engine
    from facebank.v1 import facebank_pb2 as pb

    n_ids, per_id = (2_000, 10) if quick else (100_000, 10)
    g = gallery(n_ids, seed=7)
    rng = np.random.default_rng(1007)  # not the gallery's seed: the faces' noise would repeat its centres
    owner = np.repeat(np.arange(n_ids), per_id)
    x = g.faces(owner, rng)
    forget_ids = rng.choice(n_ids, size=n_ids // 100, replace=False)
    # Enough retain probes to resolve a 0.1-point change of recall@10: at 2,000 its
    # paired standard error was about as large as that (it is reported with the result).
    retain_ids = np.setdiff1d(rng.choice(n_ids, size=min(2000 if quick else 10_000, n_ids), replace=False), forget_ids)
    probes_forget = g.faces(forget_ids, rng)
    probes_retain = g.faces(retain_ids, rng)

    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(ServerConfig(data_dir=Path(tmp) / "data", listen="127.0.0.1:0", background=True, compact_after_forget_s=1e9))
        engine.collections.create_collection(pb.CreateCollectionRequest(name="bench", index=pb.IndexOptions(kind=pb.INDEX_KIND_IVF)))
        log(f"forget: loading {len(x):,} faces of {n_ids:,} identities")
        enroll_synthetic(engine, "bench", x, per_id, chunk=1000)
        # Train the index on the whole collection before measuring, as the retrain after
        # the forgets will be: otherwise "before" is whatever index the loading happened
        # to leave (trained on a part, at a moment set by the background thread). Under the
        # worker's lock: a rebuild in flight would otherwise swap in a segment without the flag.
        with engine.maintenance.work_lock:
            engine.store.segments.get(engine.store.collection("bench").id, "enrolled").retrain_pending = True
        engine.maintenance.clean_now()
        segment = engine.store.segments.get(engine.store.collection("bench").id, "enrolled")
        nlist, nprobe_before = segment.index.nlist, segment.index.default_nprobe
        log(f"forget: index {segment.index.kind}, nlist {nlist}, nprobe {nprobe_before}")

        def search(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """(top identity per query, its first 10 faces as rows of x) through the engine."""
            top = np.full(len(q), -1, np.int64)
            faces = np.full((len(q), 10), -1, np.int64)
            for start in range(0, len(q), 64):
                req = pb.SearchByEmbeddingRequest(collection="bench", queries_f32=np.ascontiguousarray(q[start : start + 64], "<f4").tobytes(),
                                                  options=pb.SearchOptions(top_k=10, threshold=-1.0))
                for i, r in enumerate(engine.search.search_by_embedding(req).results):
                    if r.matches:
                        top[start + i] = int(r.matches[0].identity_id)
                    ids = [f - 1 for m in r.matches for f in m.face_ids][:10]  # face ids are 1-based rows
                    faces[start + i, : len(ids)] = ids
            return top, faces

        def quality(alive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """Per retain probe: rank-1 correct, and recall@10 of its faces."""
            top, found = search(probes_retain)
            truth = _exact_faces(x, alive, probes_retain)
            return top == retain_ids, np.asarray([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])

        alive = np.ones(len(x), bool)
        before = quality(alive)
        stop, searches, search_errors = threading.Event(), [0], []

        def background_searches():
            while not stop.is_set():
                try:
                    search(probes_retain[rng.integers(0, len(probes_retain), 64)])
                    searches[0] += 64
                except Exception as err:  # reported, never hidden
                    search_errors.append(repr(err))

        searcher = threading.Thread(target=background_searches)
        searcher.start()
        latencies, hits_right_after = [], 0
        for ident, probe in zip(forget_ids.tolist(), probes_forget):
            t0 = time.perf_counter()
            engine.identities.forget(pb.ForgetRequest(collection="bench", identity_id=str(ident)))
            latencies.append(time.perf_counter() - t0)
            hits_right_after += int(search(probe[None])[0][0] == ident)
        stop.set()
        searcher.join()
        pending = engine.maintenance.pending_retrains
        t0 = time.perf_counter()
        engine.maintenance.clean_now()
        retrain_s = time.perf_counter() - t0
        nprobe_after = engine.store.segments.get(engine.store.collection("bench").id, "enrolled").index.default_nprobe
        alive[np.isin(owner, forget_ids)] = False
        after = quality(alive)
        forget_hits = int(np.sum(search(probes_forget)[0] == forget_ids))
        engine.close()

    ms = np.asarray(latencies) * 1000
    result = {
        "identities": n_ids, "faces": len(x), "forgotten": len(forget_ids), "index": "ivf",
        "forget_p50_ms": round(float(np.percentile(ms, 50)), 2), "forget_p99_ms": round(float(np.percentile(ms, 99)), 2),
        "forget_rank1_hit_rate": (hits_right_after + forget_hits) / (2 * len(forget_ids)),
        "retain_probes": len(retain_ids),
        "retain_rank1_before": round(float(before[0].mean()), 4), "retain_rank1_after": round(float(after[0].mean()), 4),
        "retain_recall10_before": round(float(before[1].mean()), 4), "retain_recall10_after": round(float(after[1].mean()), 4),
        "retain_rank1_drop_points": round(100 * float(before[0].mean() - after[0].mean()), 3),
        "retain_recall10_drop_points": round(100 * float(before[1].mean() - after[1].mean()), 3),
        # The paired difference's standard error: a drop within about two of these is not resolved.
        "retain_recall10_drop_se_points": round(100 * float(np.std(before[1] - after[1]) / np.sqrt(len(retain_ids))), 3),
        "nlist": nlist, "nprobe_before": nprobe_before, "nprobe_after": nprobe_after,
        "retrains_pending_after_sequence": pending, "retrain_s": round(retrain_s, 2),
        "searches_during_forgets": searches[0], "search_errors": search_errors[:5],
    }
    log(f"forget: p50 {result['forget_p50_ms']} ms, p99 {result['forget_p99_ms']} ms; forget-set hits {result['forget_rank1_hit_rate']}")
    return {"forget": result}
