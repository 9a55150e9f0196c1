import sys, time
from pathlib import Path
import numpy as np
sys.path.insert(0, ".")
import facebank.index.keyring as K
spent = [0.0, 0, 0.0]
real = K.DataKey.open
def timed(self, blob, aad):
    t = time.perf_counter(); out = real(self, blob, aad); spent[0] += time.perf_counter() - t; spent[1] += 1; spent[2] += len(blob); return out
K.DataKey.open = timed
from bench.scale import _engine, _search
data = Path(sys.argv[1]); probes = np.load(data.parent / "probes.npy")
t = time.perf_counter(); engine = _engine(data); _search(engine, probes)
print("first search", round(time.perf_counter() - t, 2), "decrypt s", round(spent[0], 2), "calls", spent[1], "GB", round(spent[2] / 2**30, 2))
engine.close()
