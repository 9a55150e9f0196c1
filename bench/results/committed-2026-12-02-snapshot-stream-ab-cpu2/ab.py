"""Snapshot write and read of one 1M-face IVF-Flat index, before and after streaming.

    python bench/results/committed-2026-12-02-snapshot-stream-ab-cpu2/ab.py [N]

before: index/snapshot.py of 796e879 (read from git history) with the
entry made as that commit made it (faiss.serialize_index), and its read followed
by faiss.deserialize_index, as that commit's factory did; after: this checkout's
stage_snapshot + FaissBlob, and read_snapshot with FAISS_READERS. Each write and
each read runs in its own process, in turn (before, after; 2 rounds), and reports
its RSS before the step (the index loaded, or nothing yet), its peak during it
(VmHWM), and after it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent


def rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def peak_gb() -> float:
    """This process's high-water RSS (VmHWM: its own memory map's, unlike ru_maxrss,
    which after fork and exec keeps the forking parent's peak)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 2**20


BEFORE = "796e879"


def before_module():
    """index/snapshot.py as it was at BEFORE, read from git history."""
    source = subprocess.run(["git", "show", f"{BEFORE}:index/snapshot.py"], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    path = Path(tempfile.mkdtemp(prefix="fb-snap-before-")) / "snapshot_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("snapshot_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def child(version: str, step: str, work: str) -> dict:
    import faiss

    from facebank.index.keyring import DataKey
    from facebank.index.snapshot import read_snapshot, stage_snapshot
    from facebank.index.vectors import FAISS_READERS, FaissBlob

    key = DataKey(bytes(32), 1)
    path = Path(work) / f"{version}.snap"
    if step == "write":
        index = faiss.read_index(str(Path(work) / "index.faiss"))
        before, t0 = rss_gb(), time.perf_counter()
        if version == "before":
            before_module().write_snapshot(path, key, {"kind": "ivf"}, {"faiss": faiss.serialize_index(index)})
        else:
            stage_snapshot(path, key, {"kind": "ivf"}, {"faiss": FaissBlob(index)}).commit()
    else:
        before, t0 = rss_gb(), time.perf_counter()
        if version == "before":
            _, arrays = before_module().read_snapshot(path, key)
            index = faiss.deserialize_index(arrays["faiss"])
            del arrays
        else:
            _, entries = read_snapshot(path, key, FAISS_READERS)
            index = entries.pop("faiss")
        assert index.ntotal > 0
    seconds = time.perf_counter() - t0
    return {"version": version, "step": step, "rss_before_gb": round(before, 2), "peak_gb": round(peak_gb(), 2),
            "rss_after_gb": round(rss_gb(), 2), "seconds": round(seconds, 1)}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    import faiss

    work = Path(tempfile.mkdtemp(prefix="fb-snap-ab-"))
    rng = np.random.default_rng(0)
    quantizer = faiss.IndexFlatIP(512)
    index = faiss.IndexIVFFlat(quantizer, 512, 2048, faiss.METRIC_INNER_PRODUCT)
    x = rng.standard_normal((n, 512), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index.train(x[rng.choice(n, 64 * 2048, replace=False)])
    index.add_with_ids(x, np.arange(n, dtype=np.int64))
    del x
    faiss.write_index(index, str(work / "index.faiss"))
    del index
    rows = []
    for round_ in range(2):
        for step in ("write", "read"):
            for version in ("before", "after"):
                code = f"import json, sys; sys.path.insert(0, {str(HERE)!r}); from ab import child; print(json.dumps(child({version!r}, {step!r}, {str(work)!r})))"
                out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
                row = {"round": round_ + 1, **json.loads(out.stdout.strip().splitlines()[-1])}
                rows.append(row)
                print(json.dumps(row), flush=True)
    (HERE / "results.json").write_text(json.dumps({"faces": n, "index_bytes": (work / "index.faiss").stat().st_size, "rows": rows}, indent=2))
    for p in work.iterdir():
        p.unlink()
    work.rmdir()


if __name__ == "__main__":
    main()
