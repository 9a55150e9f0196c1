"""Build a data directory of N synthetic faces as bench/scale.py's life loads them (no forgets)."""
import sys, time
from pathlib import Path
import numpy as np
sys.path.insert(0, ".")
from bench.search import enroll_synthetic
from bench.synthetic import gallery
from bench.scale import _engine, CHUNK_IDS, PER_ID
n, data = int(sys.argv[1]), Path(sys.argv[2]); n_ids = n // PER_ID
engine = _engine(data)
g = gallery(n_ids, seed=11)
t = time.perf_counter()
for start in range(0, n_ids, CHUNK_IDS):
    labels = np.repeat(np.arange(start, min(n_ids, start + CHUNK_IDS)), PER_ID)
    enroll_synthetic(engine, "default", g.faces(labels, np.random.default_rng(12 + start)), PER_ID, chunk=CHUNK_IDS, first_id=start)
ids = np.random.default_rng(13).integers(0, n_ids, 64)
np.save(data.parent / "probes.npy", g.faces(ids, np.random.default_rng(14))); np.save(data.parent / "probe_ids.npy", ids)
del g
engine.maintenance.clean_now(); engine.close()
print("built", n, round(time.perf_counter() - t, 1), flush=True)
