"""The catalog's file-backed RSS at the end of each fetch of 32,768 faces drawn from all over
a collection (as a retrain's training sample is read): `python fetch_rss.py DATA 300000`
loads 300,000 synthetic faces into DATA (once), then takes two such chunks."""
import sys, time
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from bench import scale
def rss_file():
    f = dict(l.split(":", 1) for l in open("/proc/self/status"))
    return int(f["RssFile"].split()[0]) / 2**10
tmp, n = Path(sys.argv[1]), int(sys.argv[2])
e = scale._engine(tmp / "data")
if len(e.store.list_collections()) == 0 or not (tmp / "loaded").exists():
    scale.load_people(e, n // 10)
    (tmp / "loaded").touch()
cat = e.store.catalog
orig = cat.release_pages
seen = []
def rel():
    seen.append(rss_file())
    return orig()
cat.release_pages = rel
cid = e.store.collection("default").id
_, source = e.store._segment_source(cid, "enrolled")
orig()
print("file before", rss_file())
rng = np.random.default_rng(0)
rows = np.sort(rng.choice(len(source), 65536, replace=False))
for start in range(0, len(rows), 32768):
    t = time.perf_counter()
    source.take(rows[start:start + 32768])
    print(f"chunk: file RSS at release {seen[-1]:.0f} MB, {time.perf_counter() - t:.2f} s", flush=True)
e.close()
