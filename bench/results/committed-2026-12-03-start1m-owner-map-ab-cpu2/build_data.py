"""Build a data directory of N synthetic faces as bench/scale.py's life loads them (no forgets)."""
import sys, time
from pathlib import Path
import numpy as np
sys.path.insert(0, ".")
from bench.scale import PER_ID, _engine, load_people
n, data = int(sys.argv[1]), Path(sys.argv[2]); n_ids = n // PER_ID
engine = _engine(data)
t = time.perf_counter()
g = load_people(engine, n_ids)
ids = np.random.default_rng(13).integers(0, n_ids, 64)
np.save(data.parent / "probes.npy", g.faces(ids, np.random.default_rng(14))); np.save(data.parent / "probe_ids.npy", ids)
del g
engine.maintenance.clean_now(); engine.close()
print("built", n, round(time.perf_counter() - t, 1), flush=True)
