"""Interleaved A/B: `facebank enroll DIR` (1 stream, crops on) on the code before (847896b)
and after (pipelined bulk), and the plain onnxruntime loop, in turn, ROUNDS times."""
import json, os, subprocess, sys, tempfile, time, socket
from pathlib import Path
sys.path.insert(0, "/work/main")
import numpy as np
from bench.enroll import make_folder, _plain_loop

TREES = {"before (847896b, sequential)": Path("/tmp/before"), "after (pipelined)": Path("/work/main")}
ROUNDS, COUNT = 3, 600

def port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

def enroll(tree, folder, data):
    py = str(tree / ".venv/bin/python")
    address = f"127.0.0.1:{port()}"
    server = subprocess.Popen([py, "-m", "facebank", "serve", "--data", str(data), "--listen", address, "--http", "off"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=tree)
    try:
        server.stdout.readline()
        t0 = time.perf_counter()
        subprocess.run([py, "-m", "facebank", "enroll", str(folder), "--json"], capture_output=True, text=True, env={**os.environ, "FACEBANK_SERVER": address}, check=True, cwd=tree)
        return COUNT / (time.perf_counter() - t0)
    finally:
        server.terminate(); server.wait()

with tempfile.TemporaryDirectory() as tmp:
    folder = Path(tmp) / "photos"; make_folder(folder, COUNT)
    rates = {k: [] for k in [*TREES, "plain onnxruntime loop"]}
    for r in range(ROUNDS):
        rates["plain onnxruntime loop"].append(_plain_loop(folder, COUNT)["images_per_s"])
        for name, tree in TREES.items():
            rates[name].append(enroll(tree, folder, Path(tmp) / f"d-{r}-{tree.name}"))
        print(r, {k: round(v[-1], 1) for k, v in rates.items()}, flush=True)
    out = {k: {"runs": [round(x, 1) for x in v], "median": round(float(np.median(v)), 1)} for k, v in rates.items()}
    loop = out["plain onnxruntime loop"]["median"]
    for k in TREES:
        out[k]["vs_plain_loop"] = round(out[k]["median"] / loop, 2)
    print(json.dumps(out, indent=1))
    Path("/tmp/ab.json").write_text(json.dumps({"command": "python /tmp/ab.py (bench/results/.../ab.py)", "photos": COUNT, "rounds": ROUNDS, "streams": 1, "crops": True, "results": out}, indent=1))
