"""Where a start from the snapshot spends its time: `python start_profile.py N` from the repository root."""
import sys, time, tempfile, shutil, cProfile, pstats
from pathlib import Path
import numpy as np
sys.path.insert(0, ".")
from bench.search import enroll_synthetic
from bench.synthetic import gallery
from bench.scale import _engine, _search, CHUNK_IDS, PER_ID
n = int(sys.argv[1]); n_ids = n // PER_ID
tmp = Path(tempfile.mkdtemp())
engine = _engine(tmp / "data")
g = gallery(n_ids, seed=11)
for start in range(0, n_ids, CHUNK_IDS):
    labels = np.repeat(np.arange(start, min(n_ids, start + CHUNK_IDS)), PER_ID)
    enroll_synthetic(engine, "default", g.faces(labels, np.random.default_rng(12 + start)), PER_ID, chunk=CHUNK_IDS, first_id=start)
q = g.faces(np.arange(64), np.random.default_rng(5)); del g
engine.maintenance.clean_now(); engine.close()
prof = cProfile.Profile()
t = time.perf_counter()
prof.enable()
engine = _engine(tmp / "data"); found = _search(engine, q)
prof.disable()
print("start to first search", round(time.perf_counter() - t, 2), "right", np.mean([f == str(i) for i, f in enumerate(found)]), flush=True)
pstats.Stats(prof).sort_stats("cumulative").print_stats(35)
engine.close(); shutil.rmtree(tmp)
