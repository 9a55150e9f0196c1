"""Packing and unpacking 20,000 unit vectors of 512 values: one at a time, and 4,096 rows at a time
(what a rebuild does). Run from the repository root: `python bench/results/<this run>/unpack_speed.py`."""
import time

import numpy as np

from facebank.index.embedding_codec import pack, unpack, unpack_rows

v = np.random.default_rng(0).standard_normal((20000, 512)).astype(np.float32)
v /= np.linalg.norm(v, axis=1, keepdims=True)
t = time.perf_counter(); plains = [pack(x) for x in v]; pack_us = (time.perf_counter() - t) / len(v) * 1e6
t = time.perf_counter(); [unpack(p) for p in plains]; one_us = (time.perf_counter() - t) / len(v) * 1e6
t = time.perf_counter()
for s in range(0, len(plains), 4096):
    unpack_rows(plains[s:s + 4096], 512)
rows_us = (time.perf_counter() - t) / len(v) * 1e6
t = time.perf_counter(); [np.frombuffer(x.tobytes(), "<f4") for x in v]; bare_us = (time.perf_counter() - t) / len(v) * 1e6
print(f"pack {pack_us:.1f} us a face; unpack one at a time {one_us:.1f} us, 4,096 at a time {rows_us:.1f} us; "
      f"a bare row read {bare_us:.1f} us; packed size {np.mean([len(p) for p in plains]):.0f} B (max {max(len(p) for p in plains)})")
