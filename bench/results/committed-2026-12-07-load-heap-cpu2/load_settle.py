"""A server that loaded its faces against one started from its snapshot (issue 23).

Each arm loads N synthetic faces through the engine as `bench.scale` loads from
2M (after each chunk of 1,000 people the rebuilds that came due, and the step the
upkeep worker runs after its passes: `Maintenance.return_free_heap`, a heap
trim when anything was committed, at most every 2 s), then settles 5 s and
reports its memory; "untrimmed" trims only after a rebuild (the code before). A third process starts on the same data from the snapshot
and reports the same. Anonymous and file-backed resident memory from
/proc/self/status; "after a trim" is the same process after malloc_trim(0), the
least the heap could be.

    python bench/results/committed-2026-12-07-load-heap-cpu2/load_settle.py 1000000 > out.json
"""

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))


def memory() -> dict:
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    anon, file = (int(fields[k].split()[0]) / 2**20 for k in ("RssAnon", "RssFile"))
    return {"anon_gb": round(anon, 3), "rss_gb": round(anon + file, 3)}


def load(data: str, n: str, arm: str) -> None:

    from bench import scale
    from facebank.index.maintenance import Maintenance
    from facebank.index.resident_pages import trim_heap

    if arm == "untrimmed":   # the code before: the heap trimmed after a rebuild only
        Maintenance.return_free_heap = lambda self, now=False: trim_heap() if now else False
    engine = scale._engine(Path(data))
    t0 = time.perf_counter()
    scale.load_people(engine, int(n) // scale.PER_ID, upkeep=True)
    engine.maintenance.clean_now()
    load_s = time.perf_counter() - t0
    time.sleep(scale.SETTLE_S)
    settled = memory()
    trim_heap()
    out = {"arm": arm, "faces": int(n), "load_s": round(load_s, 1), "settled": settled, "after_a_trim": memory()}
    engine.close()
    print(json.dumps(out), flush=True)


def start(data: str) -> None:
    import numpy as np

    from bench import scale
    from facebank.index.resident_pages import trim_heap

    t0 = time.perf_counter()
    engine = scale._engine(Path(data))
    scale._search(engine, np.random.default_rng(0).standard_normal((64, 512)).astype(np.float32))
    first_s = time.perf_counter() - t0
    time.sleep(scale.SETTLE_S)
    settled = memory()
    trim_heap()
    out = {"arm": "started from the snapshot", "first_search_s": round(first_s, 1), "settled": settled, "after_a_trim": memory()}
    engine.close()
    print(json.dumps(out), flush=True)


def child(*args: str) -> dict:
    run = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT)
    if run.returncode != 0:
        raise RuntimeError(run.stderr[-3000:])
    return json.loads(run.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    if sys.argv[1] == "load":
        load(*sys.argv[2:])
    elif sys.argv[1] == "start":
        start(sys.argv[2])
    else:
        rows = []
        for arm in ("trimmed", "untrimmed"):
            tmp = Path(tempfile.mkdtemp(prefix="fb-load-heap-"))
            try:
                rows.append(child("load", str(tmp / "data"), sys.argv[1], arm))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                if arm == "trimmed":
                    rows.append(child("start", str(tmp / "data")))
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        print(json.dumps(rows, indent=1))
