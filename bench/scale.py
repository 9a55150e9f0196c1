"""Memory and time over a collection's life at scale (issue 23), through the engine.

One child process loads N synthetic faces (identities of 10, generated chunk by
chunk: never the whole set at once), builds the index, settles, takes 20 forgets
with batch-64 searches running, retrains, compacts and settles again; two more
children start on that data directory, from the snapshot and without it (every
index rebuilt from the catalog), each up to its first correct search. The parent
samples each child's RSS (anonymous and file-backed apart) every 0.25 s, so peaks
are seen as they happen, and reports per phase the peak against the steady memory
of a server started from its snapshot.

Below UPKEEP_FROM faces the life loads with the upkeep idle and builds the index
once after the load (as every committed run up to 1M did: the exact index grows
with the load). From UPKEEP_FROM, where that exact index alone would not fit in
memory (20 GB at 10M), it loads as a server does: after each chunk of people the
upkeep runs whenever a rebuild is due (exact -> IVF at 50k, IVF resized as the
collection grows 4x, IVF -> 8-bit IVF at 2M), and the "index" phase builds only
what is still due at the end.

    python -m bench --only scale --scale-sizes 1000000
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SIZES: list[int] = []   # --scale-sizes; default 1,000,000 (20,000 with --quick)
PER_ID = 10
CHUNK_IDS = 1000
FORGETS = 20
SAMPLE_S = 0.25
SETTLE_S = 5.0
PEAK_GOAL = 1.5
PHASES = ("load", "index", "forgets", "retrain", "compaction")
UPKEEP_FROM = 2_000_000   # from this size the load runs the upkeep's rebuilds as they come due (see above)


def run(quick: bool, log=print) -> dict:
    rows, traces = [], {}
    for n in SIZES or ([20_000] if quick else [1_000_000]):
        row, trace = measure(n, log)
        rows.append(row)
        traces[str(n)] = trace
    return {"scale": rows, "scale_trace": traces}


def measure(n: int, log=print) -> tuple[dict, list]:
    tmp = Path(tempfile.mkdtemp(prefix="fb-scale-"))
    try:
        life = _watch("life", [str(tmp), str(n), "upkeep" if n >= UPKEEP_FROM else "after"], log)
        disk = {part: sum(p.stat().st_size for p in (tmp / "data" / part).glob("*") if p.is_file()) for part in ("catalog", "indexes")}
        tables = catalog_tables(tmp / "data" / "catalog", n)
        warm = _watch("start", [str(tmp), "snapshot"], log)
        for snap in (tmp / "data" / "indexes").glob("*.snap"):
            snap.unlink()
        cold = _watch("start", [str(tmp), "rebuild"], log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    steady = life["phases"]["settled"]["median_gb"]
    row = {"faces": n, "load_faces_per_s": life["result"]["load_faces_per_s"], "steady_gb": steady,
           "steady_anon_gb": life["phases"]["settled"]["median_anon_gb"],
           **{f"peak_{p}_gb": life["phases"][p]["peak_gb"] for p in PHASES},
           **{f"peak_{p}_anon_gb": life["phases"][p]["peak_anon_gb"] for p in PHASES},
           "steady_after_gb": life["phases"]["settled-after"]["median_gb"],
           "retrain_s": life["phases"]["retrain"]["seconds"], "compaction_s": life["phases"]["compaction"]["seconds"],
           "forget_p50_ms": life["result"]["forget_p50_ms"], "forget_p99_ms": life["result"]["forget_p99_ms"],
           "catalog_bytes_per_face": round(disk["catalog"] / n), "snapshot_bytes_per_face": round(disk["indexes"] / n),
           "catalog_tables_bytes_per_face": tables,
           "start_snapshot_s": warm["result"]["first_search_s"], "start_snapshot_steady_gb": warm["phases"]["settled"]["median_gb"],
           "start_snapshot_steady_anon_gb": warm["phases"]["settled"]["median_anon_gb"],
           "start_snapshot_peak_gb": warm["peak_gb"], "start_snapshot_peak_anon_gb": warm["peak_anon_gb"],
           "start_rebuild_s": cold["result"]["first_search_s"], "start_rebuild_steady_gb": cold["phases"]["settled"]["median_gb"],
           "start_rebuild_steady_anon_gb": cold["phases"]["settled"]["median_anon_gb"],
           "start_rebuild_peak_gb": cold["peak_gb"], "start_rebuild_peak_anon_gb": cold["peak_anon_gb"]}
    log(f"scale: {n:,} faces: steady {steady} GB; peaks " + ", ".join(f"{p} {row[f'peak_{p}_gb']}" for p in PHASES)
        + f" GB; start from snapshot {row['start_snapshot_s']} s, rebuilding {row['start_rebuild_s']} s")
    trace = [("life", *s) for s in life["samples"]] + [("start-snapshot", *s) for s in warm["samples"]] + \
        [("start-rebuild", *s) for s in cold["samples"]]
    return row, trace


def catalog_tables(catalog: Path, n: int) -> dict[str, int]:
    """Bytes per face of each LMDB table (its pages: leaf, branch, overflow), largest first."""
    import lmdb

    env = lmdb.open(str(catalog), readonly=True, lock=False, max_dbs=128)
    out = {}
    try:
        with env.begin() as t:
            for name in [k for k, _ in t.cursor()]:
                st = t.stat(env.open_db(name, txn=t, create=False))
                pages = st["leaf_pages"] + st["branch_pages"] + st["overflow_pages"]
                if pages:
                    out[name.decode()] = round(pages * st["psize"] / n)
    finally:
        env.close()
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def targets(rows: list[dict]) -> list[tuple[str, object, str, bool]]:
    """Peaks against the steady memory of a server started from its snapshot (serving
    the collection, nothing else resident), as RSS and as anonymous memory alone."""
    out = []
    for r in rows:
        n, steady, steady_anon = r["faces"], r["start_snapshot_steady_gb"], r["start_snapshot_steady_anon_gb"]
        for phase in PHASES:
            ratio = round(r[f"peak_{phase}_gb"] / steady, 2)
            anon = round(r[f"peak_{phase}_anon_gb"] / steady_anon, 2)
            out.append((f"peak RSS during {phase} / steady RSS from a snapshot start, {n:,} faces", ratio,
                        f"<= {PEAK_GOAL} (anonymous memory alone: {anon})", ratio <= PEAK_GOAL))
        ratio, anon = round(r["steady_gb"] / steady, 2), round(r["steady_anon_gb"] / steady_anon, 2)
        out.append((f"steady RSS of the process that loaded the faces / a start from the snapshot, {n:,} faces", ratio,
                    f"<= 1.1 (anonymous memory alone: {anon})", ratio <= 1.1))
        ratio = round(r["start_rebuild_steady_gb"] / steady, 2)
        anon = round(r["start_rebuild_steady_anon_gb"] / steady_anon, 2)
        out.append((f"steady RSS after a start without a snapshot / with one, {n:,} faces", ratio,
                    f"<= 1.1 (anonymous memory alone: {anon})", ratio <= 1.1))
        out.append((f"start from the snapshot to the first correct search, {n:,} faces (s)", r["start_snapshot_s"],
                    "<= 60 at 10M", r["start_snapshot_s"] <= 60))
        out.append((f"catalog bytes per face, {n:,} faces", r["catalog_bytes_per_face"], "<= 2400", r["catalog_bytes_per_face"] <= 2400))
    return out


def plot(run_dir: Path, traces: dict, plt) -> None:
    for n, trace in traces.items():
        fig, axes = plt.subplots(1, 3, figsize=(14, 4), gridspec_kw={"width_ratios": [4, 1, 1]})
        for ax, part in zip(axes, ("life", "start-snapshot", "start-rebuild")):
            points = [(t, gb, phase) for p, t, gb, phase, _ in trace if p == part]
            for phase in dict.fromkeys(ph for *_, ph in points):
                xs = [(t, gb) for t, gb, ph in points if ph == phase]
                ax.plot([x for x, _ in xs], [y for _, y in xs], ".", markersize=2, label=phase)
            ax.set_title(part, fontsize=9)
            ax.set_xlabel("s")
            ax.legend(fontsize=6, markerscale=4)
        axes[0].set_ylabel("RSS (GB)")
        fig.suptitle(f"facebank RSS over a collection's life, {int(n):,} faces")
        fig.tight_layout()
        fig.savefig(run_dir / f"scale_rss_{n}.png", dpi=120)
        plt.close(fig)


# -- the parent: a child, its phases and its RSS -----------------------------------------------

def _watch(what: str, args: list[str], log) -> dict:
    code = f"import sys; from bench.scale import {what}; {what}(*sys.argv[1:])"
    root = Path(__file__).resolve().parent.parent
    child = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True, cwd=root,
                             env={**os.environ, "PYTHONPATH": str(root)})
    started = time.monotonic()
    state = {"phase": "starting", "result": None}
    samples: list[tuple[float, float, str, float]] = []

    def sample() -> bool:
        phase = state["phase"]
        try:
            anon, file = _rss_parts(child.pid)
        except (OSError, ValueError, KeyError):  # gone (an exited child's status has no RSS lines)
            return False
        samples.append((round(time.monotonic() - started, 2), round((anon + file) / 2**30, 3), phase, round(anon / 2**30, 3)))
        return True

    def read() -> None:
        for line in child.stdout:
            message = json.loads(line)
            if "phase" in message:
                state["phase"] = message["phase"]
                sample()   # every phase has a sample, however short (at --quick sizes some last under SAMPLE_S)
                log(f"scale: {what} {args[1]}: {message['phase']}")
            else:
                state["result"] = message

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while child.poll() is None and sample():
        time.sleep(SAMPLE_S)
    child.wait()
    reader.join(timeout=10)
    samples.sort(key=lambda s: s[0])
    if child.returncode != 0 or state["result"] is None:
        raise RuntimeError(f"bench.scale {what} {args} failed with exit status {child.returncode}")
    phases = {}
    for phase in dict.fromkeys(s[2] for s in samples):
        own = [(t, gb, anon) for t, gb, p, anon in samples if p == phase]
        phases[phase] = {"peak_gb": max(gb for _, gb, _ in own), "median_gb": round(float(np.median([gb for _, gb, _ in own])), 3),
                         "peak_anon_gb": max(a for *_, a in own), "median_anon_gb": round(float(np.median([a for *_, a in own])), 3),
                         "seconds": round(own[-1][0] - own[0][0] + SAMPLE_S, 1)}
    return {"result": state["result"], "phases": phases, "samples": samples, "peak_gb": max(s[1] for s in samples),
            "peak_anon_gb": max(s[3] for s in samples)}


def _rss_parts(pid: int) -> tuple[int, int]:
    """(anonymous, file-backed + shared) resident bytes: the catalog is an LMDB memory map,
    and the pages a read touches count in RSS as file pages (the kernel reclaims them)."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("RssAnon", "RssFile", "RssShmem"):
                fields[name] = int(value.split()[0]) * 1024
    return fields["RssAnon"], fields["RssFile"] + fields.get("RssShmem", 0)


# -- the children ------------------------------------------------------------------------------

def _phase(name: str) -> None:
    print(json.dumps({"phase": name}), flush=True)


def _engine(data: Path):
    from facebank.server.config import ServerConfig
    from facebank.server.engine import Engine

    return Engine(ServerConfig(data_dir=data, listen="127.0.0.1:0", background=False, compact_after_forget_s=1e9))


def load_people(engine, n_ids: int, upkeep: bool = False):
    """The life's synthetic people (PER_ID faces each), enrolled through the engine CHUNK_IDS
    people at a time so that the vectors are never all in memory; returns their gallery.
    `upkeep`: after each chunk, the rebuilds that have come due, as a server's upkeep runs them.
    Either way, after each chunk, the step the upkeep worker runs after every commit: the
    heap's freed memory handed back when there is enough of it (Maintenance.return_free_heap).
    (The scripts kept with the committed runs load the same way.)"""
    from bench.search import enroll_synthetic
    from bench.synthetic import gallery

    g = gallery(n_ids, seed=11)
    for start in range(0, n_ids, CHUNK_IDS):
        labels = np.repeat(np.arange(start, min(n_ids, start + CHUNK_IDS)), PER_ID)
        enroll_synthetic(engine, "default", g.faces(labels, np.random.default_rng(12 + start)), PER_ID, chunk=CHUNK_IDS,
                         first_id=start)
        if upkeep and _rebuild_due(engine):
            engine.maintenance.clean_now()
        else:
            engine.maintenance.return_free_heap()
    engine.maintenance.return_free_heap(now=True)   # the worker's pass after the last write (within 3 s in a server)
    return g


def _rebuild_due(engine) -> bool:
    segments = engine.store.segments
    return any(s is not None and segments.wants_rebuild(s) for s in map(lambda p: segments.find(*p), segments.places()))


def life(tmp: str, n: str, load: str = "after") -> None:
    """Load (`load`: "upkeep" runs the rebuilds due during it, "after" builds once after it),
    index, settle, forgets under search load, retrain, compact, settle."""
    from facebank.v1 import facebank_pb2 as pb

    tmp_path, n_ids = Path(tmp), int(n) // PER_ID
    _phase("load")
    engine = _engine(tmp_path / "data")
    t0 = time.perf_counter()
    g = load_people(engine, n_ids, upkeep=load == "upkeep")
    load_s = time.perf_counter() - t0
    probe_ids = np.random.default_rng(13).integers(FORGETS, n_ids, 64)
    np.save(tmp_path / "probes.npy", g.faces(probe_ids, np.random.default_rng(14)))
    np.save(tmp_path / "probe_ids.npy", probe_ids)
    queries = g.faces(np.random.default_rng(15).integers(0, n_ids, 64), np.random.default_rng(16))
    del g
    _phase("index")
    engine.maintenance.clean_now()
    _phase("settled")
    _search(engine, queries)
    time.sleep(SETTLE_S)
    _phase("forgets")
    stop = threading.Event()

    def search_meanwhile() -> None:
        while not stop.is_set():
            _search(engine, queries)

    searcher = threading.Thread(target=search_meanwhile, daemon=True)
    searcher.start()
    forget_ms = []
    for i in range(FORGETS):
        t = time.perf_counter()
        engine.identities.forget(pb.ForgetRequest(collection="default", identity_id=str(i)))
        forget_ms.append(1000 * (time.perf_counter() - t))
    _phase("retrain")
    engine.maintenance.clean_now()
    stop.set()
    searcher.join()
    _phase("compaction")
    engine.maintenance.compact()
    _phase("settled-after")
    _search(engine, queries)
    time.sleep(SETTLE_S)
    _phase("closing")
    engine.close()
    print(json.dumps({"load_faces_per_s": round(int(n) / load_s), "forget_p50_ms": round(float(np.percentile(forget_ms, 50)), 1),
                      "forget_p99_ms": round(float(np.percentile(forget_ms, 99)), 1)}), flush=True)


def start(tmp: str, how: str) -> None:
    """Start on the data directory; time to the first search that finds the right people."""
    probes, probe_ids = np.load(Path(tmp) / "probes.npy"), np.load(Path(tmp) / "probe_ids.npy")
    _phase("start")
    t0 = time.perf_counter()
    engine = _engine(Path(tmp) / "data")
    found = _search(engine, probes)
    first_s = time.perf_counter() - t0
    right = float(np.mean([f == str(i) for f, i in zip(found, probe_ids)]))
    if right < 0.9:
        raise RuntimeError(f"the first search after the start ({how}) found the right person for {right:.0%} of the probes")
    _phase("settled")
    time.sleep(SETTLE_S)
    _phase("closing")
    engine.close()
    print(json.dumps({"first_search_s": round(first_s, 1), "right": right}), flush=True)


def _search(engine, queries: np.ndarray) -> list[str]:
    from facebank.v1 import facebank_pb2 as pb

    req = pb.SearchByEmbeddingRequest(collection="default", queries_f32=np.ascontiguousarray(queries, "<f4").tobytes(),
                                      options=pb.SearchOptions(top_k=10))
    response = engine.search.search_by_embedding(req)
    return [r.matches[0].identity_id if r.matches else "" for r in response.results]
