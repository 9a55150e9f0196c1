"""The store at scale: bulk load, a start that rebuilds every index from the
catalog (no snapshot), a start from the snapshot, and metadata-filtered search
against unfiltered, on a synthetic identity-structured collection.

Each start runs in a child process, so its time and memory are its own. Only
the engine's public API is used, so the same file measures an older checkout
too (`python -m bench.store --sizes N --out FILE` from that checkout): that is
how the before/after figures of a change are taken in one sitting.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = [100_000]
PER_ID = 10
SELECTIVITY = {"10%": 10, "0.1%": 1000}   # every n-th identity carries the tag
QUERIES = 300


CLUSTER_FACES = 100_000


def run(quick: bool, log=print) -> dict:
    sizes = [20_000] if quick else SIZES
    return {"store": [measure(n, log) for n in sizes], "store_clustering": clustering_passes(10_000 if quick else CLUSTER_FACES, log)}


def clustering_passes(n: int, log=print) -> dict:
    """A photo collection of n faces (one per photo) clustered through the engine, then
    1% more photos and an incremental pass: that pass must cost about its new faces,
    not the whole collection again."""
    from bench.synthetic import gallery
    from facebank.server.config import ServerConfig
    from facebank.server.engine import Engine
    from facebank.v1 import facebank_pb2 as pb

    try:
        from facebank.index import identities
        ingest = identities.ingest
    except ImportError:  # an older checkout: the store ingested
        def ingest(store, *args):
            return store.ingest(*args)
    from facebank.index.sealed_faces import NewFace

    n_ids = n // PER_ID
    g = gallery(n_ids, seed=21)
    owner = np.random.default_rng(22).integers(0, n_ids, n + n // 100)
    x = g.faces(owner, np.random.default_rng(23))
    tmp = Path(tempfile.mkdtemp(prefix="fb-cluster-"))
    try:
        engine = Engine(ServerConfig(data_dir=tmp / "data", listen="127.0.0.1:0", background=False))
        engine.collections.create_collection(pb.CreateCollectionRequest(name="photos"))
        model = engine.parts.faces.model_id

        def add(rows) -> float:
            t0 = time.perf_counter()
            for i in rows:
                ingest(engine.store, "photos", f"{i:064x}", [NewFace([0, 0, 1, 1], [[0, 0]] * 5, 0.9, {"passed": True}, x[i], f"{i:064x}", "", model)])
            return time.perf_counter() - t0

        def cluster_pass() -> float:
            t0 = time.perf_counter()
            list(engine.clusters.run_clustering(pb.ClusterRequest(collection="photos")))
            return time.perf_counter() - t0

        ingest_s = add(range(n))
        first_s = cluster_pass()
        more_s = add(range(n, len(x)))
        second_s = cluster_pass()
        engine.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {"faces": n, "added": len(x) - n, "ingest_faces_per_s": round(n / ingest_s), "first_pass_s": round(first_s, 2),
              "ingest_added_s": round(more_s, 2), "incremental_pass_s": round(second_s, 2)}
    log(f"store: clustering {n:,} faces: first pass {first_s:.1f} s, incremental pass over {len(x) - n:,} new faces {second_s:.2f} s")
    return result


def measure(n: int, log=print, keep: Path | None = None) -> dict:
    from bench.search import enroll_synthetic
    from bench.synthetic import gallery
    from facebank.server.config import ServerConfig
    from facebank.server.engine import Engine
    from facebank.v1 import facebank_pb2 as pb

    n_ids = n // PER_ID
    g = gallery(n_ids, seed=11)
    x = g.faces(np.repeat(np.arange(n_ids), PER_ID), np.random.default_rng(12))
    tmp = Path(tempfile.mkdtemp(prefix="fb-store-"))
    data = tmp / "data"
    try:
        engine = Engine(ServerConfig(data_dir=data, listen="127.0.0.1:0", background=False, compact_after_forget_s=1e9))
        engine.collections.create_collection(pb.CreateCollectionRequest(name="bench"))
        t0 = time.perf_counter()
        enroll_synthetic(engine, "bench", x, PER_ID, chunk=1000)
        load_s = time.perf_counter() - t0
        for label, every in SELECTIVITY.items():
            for i in range(0, n_ids, every):
                engine.identities.update_identity(pb.UpdateIdentityRequest(collection="bench", identity_id=str(i), set_metadata={"tag": label}))
        engine.maintenance.clean_now() if hasattr(engine, "maintenance") else engine.store.maintenance.clean_now()
        engine.close()
        del x
        probes = g.faces(np.random.default_rng(13).integers(0, n_ids, QUERIES), np.random.default_rng(14))
        np.save(tmp / "probes.npy", probes)
        log(f"store: {n:,} faces loaded in {load_s:.0f} s; starting from the snapshot")
        warm = _child(data, tmp / "probes.npy")
        for snap in (data / "indexes").glob("*.snap"):
            snap.unlink()
        log("store: starting without a snapshot (every index rebuilt from the catalog)")
        cold = _child(data, tmp / "probes.npy")
        result = {"faces": n, "identities": n_ids, "load_s": round(load_s, 1), "load_faces_per_s": round(n / load_s),
                  "catalog_bytes": sum(p.stat().st_size for p in (data / "catalog").glob("*.mdb")),
                  "start_from_snapshot": warm, "start_rebuilding_from_catalog": cold}
        log(f"store: rebuild from catalog {cold['start_s']} s (snapshot start {warm['start_s']} s); filtered p50 "
            f"{cold['search_ms']} ms")
        return result
    finally:
        if keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


def _child(data: Path, probes: Path) -> dict:
    code = f"import json, sys; from bench.store import child; print(json.dumps(child({str(data)!r}, {str(probes)!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def child(data: str, probes_path: str) -> dict:
    """In a fresh process: start the engine on `data`, then time single-query searches."""
    import psutil

    from facebank.server.config import ServerConfig
    from facebank.server.engine import Engine
    from facebank.v1 import facebank_pb2 as pb

    t0 = time.perf_counter()
    engine = Engine(ServerConfig(data_dir=Path(data), listen="127.0.0.1:0", background=False))
    start_s = time.perf_counter() - t0
    settled = psutil.Process().memory_info().rss
    probes = np.load(probes_path)
    timings = {}
    for label, flt in [("unfiltered", {}), *((f"filter {k}", {"tag": k}) for k in SELECTIVITY)]:
        times = []
        for q in probes:
            req = pb.SearchByEmbeddingRequest(collection="bench", queries_f32=np.ascontiguousarray(q[None], "<f4").tobytes(),
                                              options=pb.SearchOptions(top_k=10, filter=flt))
            t = time.perf_counter()
            engine.search.search_by_embedding(req)
            times.append(time.perf_counter() - t)
        timings[label] = round(1000 * float(np.percentile(times[10:], 50)), 2)
    engine.close()
    return {"start_s": round(start_s, 1), "rss_after_start_gb": round(settled / 2**30, 2),
            "peak_rss_gb": round(_high_water() / 2**30, 2), "search_ms": timings}


def _high_water() -> int:
    """This process's peak RSS in bytes: VmHWM, its own memory map's (ru_maxrss keeps, after
    fork and exec, the forking parent's peak: the bench's, which held the whole gallery)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) * 1024


def rows(measured: dict, version: str) -> tuple[list[dict], list[dict]]:
    """Flat table rows of one `--out` file (store, clustering)."""
    out = []
    for r in measured.get("store", []):
        for start, key in (("from snapshot", "start_from_snapshot"), ("rebuilding from catalog", "start_rebuilding_from_catalog")):
            m = r[key]
            out.append({"version": version, "faces": r["faces"], "load_s": r["load_s"], "catalog_bytes_per_face": round(r["catalog_bytes"] / r["faces"]),
                        "start": start, "start_s": m["start_s"], "rss_after_start_gb": m["rss_after_start_gb"], "peak_rss_gb": m["peak_rss_gb"],
                        "unfiltered_ms": m["search_ms"]["unfiltered"], "filter_10pct_ms": m["search_ms"]["filter 10%"],
                        "filter_0.1pct_ms": m["search_ms"]["filter 0.1%"]})
    clustering = [{"version": version, **measured["store_clustering"]}] if measured.get("store_clustering") else []
    return out, clustering


def combine(before: dict, after: dict, name: str, command: str) -> Path:
    """One committed run from the same measurements taken on two checkouts."""
    from bench import report
    from bench.machine import describe

    before_rows, before_cl = rows(before, "before")
    after_rows, after_cl = rows(after, "after")
    results = {"run": name, "quick": False, "machine": describe(), "command": command, "seconds": {},
               "store_rows": sorted(before_rows + after_rows, key=lambda r: (r["faces"], r["start"], r["version"] != "before")),
               "store_clustering_rows": before_cl + after_cl}
    run_dir = Path(__file__).resolve().parent / "results" / name
    report.write(run_dir, results)
    return run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000")
    parser.add_argument("--cluster-faces", type=int, default=0)
    parser.add_argument("--out", help="write the measurements here (JSON)")
    parser.add_argument("--combine", nargs=2, metavar=("BEFORE", "AFTER"), help="write one run from two --out files (bench/results/NAME)")
    parser.add_argument("--name", default="store-before-after")
    args = parser.parse_args()
    if args.combine:
        before, after = (json.loads(Path(f).read_text()) for f in args.combine)
        print(combine(before, after, args.name, "python -m bench.store " + " ".join(sys.argv[1:])))
        return
    if not args.out:
        parser.error("give --out FILE (or --combine BEFORE AFTER)")
    try:
        from facebank.server.runtime import configure_process
    except ImportError:  # an older checkout configures the process on import
        pass
    else:
        configure_process()
    results = {"store": [measure(int(n)) for n in args.sizes.split(",") if n]}
    if args.cluster_faces:
        results["store_clustering"] = clustering_passes(args.cluster_faces)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
