"""The main thread's stack whenever the catalog's file-backed RSS passes 100 MB above the start
during a retrain of DATA's collection (an IVF, built from a catalog its enrollments wrote):
`python retrain_file_stacks.py DATA`."""
import sys, time, threading, traceback
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from bench import scale
def rss_file():
    f = dict(l.split(":", 1) for l in open("/proc/self/status"))
    return int(f["RssFile"].split()[0]) / 2**10
tmp = Path(sys.argv[1])
e = scale._engine(tmp / "data")
e.store.owners.loaded.wait(60)
e.store.catalog.release_pages()
base = rss_file(); print("base", base, flush=True)
main = threading.get_ident()
done = threading.Event(); stacks = {}
def sample():
    while not done.is_set():
        r = rss_file()
        if r > base + 100:
            st = "".join(traceback.format_stack(sys._current_frames()[main])[-6:])
            key = st
            if key not in stacks:
                stacks[key] = r
                print(f"--- {r:.0f} MB\n{st}", flush=True)
        time.sleep(0.05)
th = threading.Thread(target=sample); th.start()
seg = e.store.segments.get(e.store.collection("default").id, "enrolled")
seg.retrain_pending = True
e.maintenance.clean_now()
done.set(); th.join()
e.close()
