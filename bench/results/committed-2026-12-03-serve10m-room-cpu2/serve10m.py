"""Ten million faces loaded and served again (issue 23), after IVF lists grow by an eighth
(index/ivf_growth.py), with what the first run (committed-2026-12-03-serve10m-cpu2) did not
measure: raw FAISS beside the engine, and forgets with their retrain at 10M.

`life` and `start` are that run's (its serve10m.py, imported from its folder): the load
through the engine with the upkeep's rebuilds as they come due, then a start from the
snapshot with recall against an exact search over every face. Then, each in its own process:

`raw`: a start from the snapshot, then batches of 64 probes and single probes through the
engine and through raw FAISS on the same index object at the same nprobe (so at equal
recall: the faces FAISS finds are the ones facebank groups into identities), interleaved.

`forget`: a start from the snapshot, batch-64 searches without pause in a thread, the first
20 identities that are not among the probes forgotten one after another, the retrain their
removal from the training sample calls for (the upkeep's clean_now, as the life does), a
check that none of them is found any more by a face of theirs, and the close (it writes the
snapshot when one is due: its seconds are the exit's).

    python serve10m.py life DIR [N]     # from the project root; DIR is created
    python serve10m.py start DIR
    python serve10m.py raw DIR
    python serve10m.py forget DIR
"""
import importlib.util
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, ".")
from bench.scale import PER_ID, _engine, _search  # noqa: E402

_spec = importlib.util.spec_from_file_location("first_run", "bench/results/committed-2026-12-03-serve10m-cpu2/serve10m.py")
first_run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(first_run)
Sampler = first_run.Sampler


def raw(root: Path, rounds: int = 5):
    import faiss

    from facebank.v1 import facebank_pb2 as pb

    probes = np.load(root / "probes.npy")
    engine = _engine(root / "data")
    _search(engine, probes)
    segment = engine.store.segments.find(1, "enrolled")
    raw_index, nprobe = segment.index.index, segment.index.default_nprobe
    del segment
    params = faiss.SearchParametersIVF(nprobe=nprobe)

    def request(queries):
        return pb.SearchByEmbeddingRequest(collection="default", queries_f32=np.ascontiguousarray(queries, "<f4").tobytes(),
                                           options=pb.SearchOptions(top_k=10, threshold=-1.0))

    def timed(call):
        t = time.perf_counter()
        call()
        return time.perf_counter() - t

    batch = np.ascontiguousarray(probes, np.float32)
    engine64, raw10, raw40 = [], [], []
    for _ in range(rounds):   # the engine, raw FAISS for 10 faces, raw FAISS for the 40 the engine asks for first
        engine64.append(timed(lambda: engine.search.search_by_embedding(request(batch))))
        raw10.append(timed(lambda: raw_index.search(batch, 10, params=params)))
        raw40.append(timed(lambda: raw_index.search(batch, 40, params=params)))
    single, raw_single = [], []
    for q in range(len(probes)):
        single.append(timed(lambda: engine.search.search_by_embedding(request(batch[q:q + 1]))))
        raw_single.append(timed(lambda: raw_index.search(batch[q:q + 1], 10, params=params)))
    engine.close()

    def per_s(times):
        return round(len(probes) / float(np.median(times)), 1)

    def ms(times, q):
        return round(1e3 * float(np.percentile(times, q)), 1)

    out = {"nprobe": nprobe, "batch64_s": {"engine": [round(x, 3) for x in engine64], "raw_faiss_k10": [round(x, 3) for x in raw10],
                                           "raw_faiss_k40": [round(x, 3) for x in raw40]},
           "queries_per_s_batch64": {"engine": per_s(engine64), "raw_faiss_k10": per_s(raw10), "raw_faiss_k40": per_s(raw40)},
           "single_query_ms": {"engine_p50": ms(single, 50), "engine_p99": ms(single, 99),
                               "raw_faiss_p50": ms(raw_single, 50), "raw_faiss_p99": ms(raw_single, 99)}}
    print(json.dumps(out), flush=True)
    (root / "raw.json").write_text(json.dumps(out, indent=1))


def forget(root: Path, count: int = 20):
    from bench.synthetic import gallery
    from facebank.v1 import facebank_pb2 as pb

    probes, probe_ids = np.load(root / "probes.npy"), np.load(root / "probe_ids.npy")
    n_ids = int(json.loads((root / "life.json").read_text())["faces"]) // PER_ID
    sampler = Sampler()
    sampler.start()
    sampler.mark("faces of the forgotten")   # their faces regenerated before the engine starts (the gallery is 2 GB at 1M people)
    taken = set(probe_ids.tolist())
    gone = [i for i in range(n_ids) if i not in taken][:count]   # as the life: the first people (each has faces in the sample k-means saw with p ~ 1/2 at 10M)
    g = gallery(n_ids, seed=11)
    gone_faces = g.faces(np.array(gone), np.random.default_rng(99))
    del g
    sampler.mark("start")
    engine = _engine(root / "data")
    assert _search(engine, gone_faces) == [str(i) for i in gone], "the people to forget are not found before the forget"
    sampler.mark("settled")
    time.sleep(5)
    stop, searched = threading.Event(), []

    def search_meanwhile():
        while not stop.is_set():
            t = time.perf_counter()
            _search(engine, probes)
            searched.append((sampler.phase, time.perf_counter() - t))

    searcher = threading.Thread(target=search_meanwhile, daemon=True)
    searcher.start()
    sampler.mark("forgets")
    forget_ms = []
    for i in gone:
        t = time.perf_counter()
        engine.identities.forget(pb.ForgetRequest(collection="default", identity_id=str(i)))
        forget_ms.append(1000 * (time.perf_counter() - t))
    sampler.mark("retrain")
    before = id(engine.store.segments.find(1, "enrolled").index)
    t = time.perf_counter()
    engine.maintenance.clean_now()
    retrain_s = time.perf_counter() - t
    replaced = id(engine.store.segments.find(1, "enrolled").index) != before
    stop.set()
    searcher.join()
    sampler.mark("settled-after")
    found_after = _search(engine, gone_faces)
    time.sleep(5)
    segment = engine.store.segments.find(1, "enrolled")
    index = {"family": segment.index.family, "faces": len(segment.index), "nlist": getattr(segment.index, "nlist", 0),
             "nprobe": getattr(segment.index, "default_nprobe", 0)}
    del segment
    sampler.mark("closing")
    t = time.perf_counter()
    engine.close()
    close_s = time.perf_counter() - t
    phases = sampler.summary()
    settled = phases["settled"]["median_anon_gb"]
    out = {"forgotten": len(gone), "forget_p50_ms": round(float(np.percentile(forget_ms, 50)), 1),
           "forget_p99_ms": round(float(np.percentile(forget_ms, 99)), 1), "forget_ms": [round(x, 1) for x in forget_ms],
           "index_replaced": replaced, "retrain_s": round(retrain_s, 1), "close_s": round(close_s, 1), "index_after": index,
           "forgotten_found_after": sum(f == str(i) for f, i in zip(found_after, gone)),
           "searches_during": {p: {"batches": sum(1 for q, _ in searched if q == p),
                                   "p50_s": round(float(np.median([d for q, d in searched if q == p] or [0])), 2)} for p in ("forgets", "retrain")},
           "peak_over_settled_anon": {p: round(phases[p]["peak_anon_gb"] / settled, 2) for p in ("forgets", "retrain", "closing") if p in phases},
           "peak_over_settled_rss": {p: round(phases[p]["peak_gb"] / phases["settled"]["median_gb"], 2)
                                     for p in ("forgets", "retrain", "closing") if p in phases},
           "phases": phases}
    print(json.dumps(out), flush=True)
    (root / "forget.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    what, root = sys.argv[1], Path(sys.argv[2])
    if what == "life":
        root.mkdir(parents=True, exist_ok=True)
        first_run.life(root, int(sys.argv[3]) if len(sys.argv) > 3 else 10_000_000)
    else:
        {"start": first_run.start, "raw": raw, "forget": forget}[what](root)
