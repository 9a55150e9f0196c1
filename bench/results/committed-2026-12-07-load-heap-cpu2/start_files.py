"""Resident memory by mapping (/proc/self/smaps) of a server started on DATA from its snapshot,
5 s after its first search: `python start_files.py DATA` (DATA: a data directory whose catalog
its enrollments wrote, never compacted; here 300,000 faces loaded by fetch_rss.py)."""
import sys, time, collections
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from bench import scale
def by_file():
    out, cur = collections.Counter(), None
    for line in open("/proc/self/smaps"):
        head = line.split()
        if "-" in head[0] and not head[0].endswith(":"):
            cur = head[5] if len(head) >= 6 else "[anon]"
        elif head[0] == "Rss:":
            out[cur] += int(head[1])
    return {k: v // 1024 for k, v in out.most_common(6)}
tmp = Path(sys.argv[1])
e = scale._engine(tmp / "data")
scale._search(e, np.random.default_rng(0).standard_normal((64, 512)).astype(np.float32))
time.sleep(5)
print(by_file())
e.close()
