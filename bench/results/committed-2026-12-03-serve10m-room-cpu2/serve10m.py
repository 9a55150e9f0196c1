"""Ten million faces loaded and served (issue 23): the first part of bench/scale.py's life at 10M.

The whole life (forgets, retrain, compaction, a start without a snapshot) takes hours more
on 2 cores; this measures what one session could: the load through the engine as a server
does (bench.scale.load_people with upkeep: the rebuilds run as they come due), the build
still due at its end, the settled memory, and a start from the snapshot to its first
correct search, settled, batch-64 and single-query searches through the engine and through raw FAISS on the
same index object at the same nprobe (so at equal recall: the faces FAISS finds are the ones
facebank groups into identities), with recall@10 of identities against an exact search over every
face (the gallery regenerated chunk by chunk, as the load generated it), over all ten ranks
and over the identities scoring at least 0.3 (what the IVF's calibration counts: the
synthetic people are unrelated, so ranks 2-10 are noise between 0 and 0.2). RSS (anonymous and
file-backed) sampled every 0.25 s in each process.

    python serve10m.py life DIR [N]     # from the project root; DIR is created
    python serve10m.py start DIR        # then, in its own process
    python serve10m.py forget DIR       # then: 20 forgets under batch-64 searches, the retrain they call for

The forget phase starts from the snapshot, searches batches of 64 without pause in a thread,
forgets the first 20 identities that are not among the probes one after another, runs the retrain
their removal from the training sample calls for (the upkeep's clean_now, as the life does),
checks that none of the forgotten people is found any more by a face of theirs, and closes
(the close writes the snapshot when one is due: its seconds are the exit's).
"""
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, ".")
from bench.scale import CHUNK_IDS, PER_ID, _engine, _search, catalog_tables, load_people  # noqa: E402


class Sampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.phase, self.samples, self.t0 = "start", [], time.monotonic()

    def run(self):
        while True:
            fields = {}
            with open("/proc/self/status") as f:
                for line in f:
                    name, _, value = line.partition(":")
                    if name in ("RssAnon", "RssFile", "RssShmem"):
                        fields[name] = int(value.split()[0]) / 2**20
            self.samples.append((round(time.monotonic() - self.t0, 2), self.phase, round(fields["RssAnon"], 3),
                                 round(fields["RssFile"] + fields.get("RssShmem", 0), 3)))
            time.sleep(0.25)

    def mark(self, phase):
        self.phase = phase
        print(f"{time.monotonic() - self.t0:8.1f} s  {phase}", flush=True)

    def summary(self):
        out = {}
        for phase in dict.fromkeys(s[1] for s in self.samples):
            own = [s for s in self.samples if s[1] == phase]
            out[phase] = {"seconds": round(own[-1][0] - own[0][0] + 0.25, 1), "peak_gb": round(max(a + f for *_, a, f in own), 3),
                          "peak_anon_gb": round(max(a for *_, a, _ in own), 3),
                          "median_gb": round(float(np.median([a + f for *_, a, f in own])), 3),
                          "median_anon_gb": round(float(np.median([a for *_, a, _ in own])), 3)}
        return out


def life(root: Path, n: int):
    sampler = Sampler()
    sampler.start()
    sampler.mark("load")
    engine = _engine(root / "data")
    rebuilds = []
    clean = engine.maintenance.clean_now

    def timed_clean(*a, **kw):   # the upkeep's rebuilds during the load, timed
        segment = engine.store.segments.find(1, "enrolled")
        before = (segment.index.family, len(segment.index)) if segment else None
        del segment   # a reference held here would keep the replaced index alive through the upkeep's heap trim
        t = time.monotonic()
        clean(*a, **kw)
        rebuilds.append({"at_s": round(t - sampler.t0, 1), "seconds": round(time.monotonic() - t, 1), "before": before,
                         "after": (engine.store.segments.find(1, "enrolled").index.family, engine.store.segments.find(1, "enrolled").index.nlist
                                   if hasattr(engine.store.segments.find(1, "enrolled").index, "nlist") else 0)})
        print("   rebuild", rebuilds[-1], flush=True)

    engine.maintenance.clean_now = timed_clean
    t = time.perf_counter()
    g = load_people(engine, n // PER_ID, upkeep=True)
    load_s = time.perf_counter() - t
    probe_ids = np.random.default_rng(13).integers(0, n // PER_ID, 64)
    np.save(root / "probes.npy", g.faces(probe_ids, np.random.default_rng(14)))
    np.save(root / "probe_ids.npy", probe_ids)
    del g
    sampler.mark("index")
    engine.maintenance.clean_now = clean
    clean()
    sampler.mark("settled")
    _search(engine, np.load(root / "probes.npy"))
    time.sleep(5)
    segment = engine.store.segments.find(1, "enrolled")
    index = {"family": segment.index.family, "faces": len(segment.index), "nlist": getattr(segment.index, "nlist", 0),
             "nprobe": getattr(segment.index, "default_nprobe", 0)}
    sampler.mark("closing")
    engine.close()
    disk = {part: sum(p.stat().st_size for p in (root / "data" / part).glob("*") if p.is_file()) for part in ("catalog", "indexes")}
    out = {"faces": n, "load_s": round(load_s, 1), "load_faces_per_s": round(n / load_s), "rebuilds_during_load": rebuilds,
           "index": index, "phases": sampler.summary(), "catalog_bytes_per_face": round(disk["catalog"] / n),
           "snapshot_bytes_per_face": round(disk["indexes"] / n), "catalog_tables_bytes_per_face": catalog_tables(root / "data" / "catalog", n)}
    print(json.dumps(out), flush=True)
    (root / "life.json").write_text(json.dumps(out, indent=1))


def exact_top10(n_ids: int, probes: np.ndarray) -> list[list[tuple[str, float]]]:
    """Each probe's 10 best identities (an identity scores its best face) over every face, with their scores."""
    from bench.synthetic import gallery

    g = gallery(n_ids, seed=11)
    best = np.full((len(probes), n_ids), -np.inf, np.float32)
    for start in range(0, n_ids, CHUNK_IDS):
        labels = np.repeat(np.arange(start, min(n_ids, start + CHUNK_IDS)), PER_ID)
        scores = probes @ g.faces(labels, np.random.default_rng(12 + start)).T
        best[:, start:start + len(labels) // PER_ID] = scores.reshape(len(probes), -1, PER_ID).max(axis=2)
    return [[(str(i), float(row[i])) for i in np.argsort(-row)[:10]] for row in best]


def start(root: Path):
    from facebank.v1 import facebank_pb2 as pb

    probes, probe_ids = np.load(root / "probes.npy"), np.load(root / "probe_ids.npy")
    sampler = Sampler()
    sampler.start()
    sampler.mark("start")
    t = time.perf_counter()
    engine = _engine(root / "data")
    found = _search(engine, probes)
    first_s = time.perf_counter() - t
    right = float(np.mean([f == str(i) for f, i in zip(found, probe_ids)]))
    sampler.mark("settled")
    time.sleep(5)
    req = pb.SearchByEmbeddingRequest(collection="default", queries_f32=np.ascontiguousarray(probes, "<f4").tobytes(),
                                      options=pb.SearchOptions(top_k=10, threshold=-1.0))   # every rank, for recall
    import faiss

    segment = engine.store.segments.find(1, "enrolled")
    raw_index, nprobe = segment.index.index, segment.index.default_nprobe
    del segment
    params = faiss.SearchParametersIVF(nprobe=nprobe)
    timings, raw10, raw40 = [], [], []
    for _ in range(5):   # interleaved: the engine, raw FAISS for 10 faces, raw FAISS for the 40 the engine asks for first
        t = time.perf_counter()
        response = engine.search.search_by_embedding(req)
        timings.append(time.perf_counter() - t)
        for k, into in ((10, raw10), (40, raw40)):
            t = time.perf_counter()
            raw_index.search(np.ascontiguousarray(probes, np.float32), k, params=params)
            into.append(time.perf_counter() - t)
    single, raw_single = [], []
    for q in range(len(probes)):   # batch 1, interleaved the same way
        one = pb.SearchByEmbeddingRequest(collection="default", queries_f32=np.ascontiguousarray(probes[q:q + 1], "<f4").tobytes(),
                                          options=pb.SearchOptions(top_k=10, threshold=-1.0))
        t = time.perf_counter()
        engine.search.search_by_embedding(one)
        single.append(time.perf_counter() - t)
        t = time.perf_counter()
        raw_index.search(np.ascontiguousarray(probes[q:q + 1], np.float32), 10, params=params)
        raw_single.append(time.perf_counter() - t)
    del raw_index
    sampler.mark("exact")
    served = [[m.identity_id for m in r.matches] for r in response.results]
    n_ids = int(json.loads((root / "life.json").read_text())["faces"]) // PER_ID
    exact = exact_top10(n_ids, probes)
    recall = float(np.mean([len(set(s) & {i for i, _ in e}) / 10 for s, e in zip(served, exact)]))
    relevant = [{i for i, score in e if score >= 0.3} for e in exact]   # what the IVF's calibration counts (ivf_calibration.py)
    recall_relevant = sum(len(set(s) & r) for s, r in zip(served, relevant)) / max(1, sum(map(len, relevant)))
    sampler.mark("closing")
    engine.close()
    phases = sampler.summary()
    out = {"first_search_s": round(first_s, 1), "right_at_rank_1": right, "recall_at_10_identities": round(recall, 4),
           "recall_at_10_identities_scoring_0.3": round(recall_relevant, 4), "relevant_identities": sum(map(len, relevant)),
           "batch64_s": [round(x, 3) for x in timings], "queries_per_s_batch64": round(64 / float(np.median(timings)), 1),
           "raw_faiss_nprobe": nprobe, "raw_faiss_k10_s": [round(x, 3) for x in raw10], "raw_faiss_k40_s": [round(x, 3) for x in raw40],
           "raw_faiss_k10_queries_per_s": round(64 / float(np.median(raw10)), 1),
           "raw_faiss_k40_queries_per_s": round(64 / float(np.median(raw40)), 1),
           "single_query_ms_p50": round(1e3 * float(np.median(single)), 1), "single_query_ms_p99": round(1e3 * float(np.percentile(single, 99)), 1),
           "raw_faiss_single_query_ms_p50": round(1e3 * float(np.median(raw_single)), 1),
           "raw_faiss_single_query_ms_p99": round(1e3 * float(np.percentile(raw_single, 99)), 1),
           "phases": {k: v for k, v in phases.items() if k in ("start", "settled")}}
    print(json.dumps(out), flush=True)
    (root / "start.json").write_text(json.dumps(out, indent=1))


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
        life(root, int(sys.argv[3]) if len(sys.argv) > 3 else 10_000_000)
    elif what == "forget":
        forget(root)
    else:
        start(root)
