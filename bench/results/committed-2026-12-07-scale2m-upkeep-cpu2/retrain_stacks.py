"""300k faces loaded as a server loads them, 8-bit codes from 200k (2M in a server),
then 20 forgets and their retrain, printing the main thread's stack each time the
anonymous memory rises 50 MB further past 100 MB above the start:
`python retrain_stacks.py DATA 300000`. Output in NOTES.md."""
import sys, time, threading, traceback
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from bench import scale
from facebank.v1 import facebank_pb2 as pb
from facebank.index import factory
factory.COMPRESS_MIN = 200_000   # 8-bit codes from 200k here, as from 2M in a server
def anon():
    f = dict(l.split(":", 1) for l in open("/proc/self/status"))
    return int(f["RssAnon"].split()[0]) / 2**10
tmp, n = Path(sys.argv[1]), int(sys.argv[2])
e = scale._engine(tmp / "data")
scale.load_people(e, n // 10, upkeep=True)
e.maintenance.clean_now()
seg = e.store.segments.get(e.store.collection("default").id, "enrolled")
print(seg.index.kind, len(seg.index), flush=True)
from facebank.index.resident_pages import trim_heap
trim_heap(); time.sleep(1)
base = anon(); print("base", base, flush=True)
main = threading.get_ident(); done = threading.Event(); seen = {}
def sample():
    last = 0
    while not done.is_set():
        a = anon()
        if a > base + 100 and a > last + 50:
            last = a
            st = "".join(traceback.format_stack(sys._current_frames()[main])[-7:])
            print(f"--- {a - base:.0f} MB above\n{st}", flush=True)
        time.sleep(0.05)
th = threading.Thread(target=sample); th.start()
for i in range(20):
    e.identities.forget(pb.ForgetRequest(collection="default", identity_id=str(i)))
print("forgot", anon() - base, flush=True)
e.maintenance.clean_now()
done.set(); th.join()
seg = e.store.segments.get(e.store.collection("default").id, "enrolled")
print(seg.index.kind, len(seg.index), "after", anon() - base, flush=True)
e.close()
