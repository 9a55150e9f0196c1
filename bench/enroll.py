"""Enrollment end to end: `facebank enroll DIR` (the bulk CLI, over gRPC, into a
fresh server) on a folder of real photos replicated with small random crops
and flips, so every file is a new image."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

PHOTOS = Path(__file__).resolve().parent.parent / "tests" / "data" / "faces"


def make_folder(root: Path, count: int, seed: int = 0) -> int:
    """`count` photos under root/<identity>/, each a jittered copy of a test photo."""
    rng = np.random.default_rng(seed)
    sources = [p for p in sorted(PHOTOS.rglob("*.jpg")) if p.parent.name not in ("groups", "edge_cases")]
    for i in range(count):
        src = sources[i % len(sources)]
        image = Image.open(src).convert("RGB")
        w, h = image.size
        dx, dy = rng.integers(0, max(1, w // 20), 2), rng.integers(0, max(1, h // 20), 2)
        image = image.crop((dx[0], dy[0], w - dx[1], h - dy[1]))
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
        folder = root / src.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i:05d}.jpg", quality=90)
    return count


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(quick: bool, log=print) -> dict:
    count = 100 if quick else 3000
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        make_folder(folder, count)
        for workers in (1, 2):
            address = f"127.0.0.1:{_port()}"
            server = subprocess.Popen([sys.executable, "-m", "facebank", "serve", "--data", str(Path(tmp) / f"data{workers}"), "--listen", address],
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            try:
                server.stdout.readline()
                started = time.perf_counter()
                out = subprocess.run([sys.executable, "-m", "facebank", "enroll", str(folder), "--json", "--workers", str(workers)],
                                     capture_output=True, text=True, env={**os.environ, "FACEBANK_SERVER": address}, check=True)
                elapsed = time.perf_counter() - started
            finally:
                server.terminate()
                server.wait()
            summary = json.loads(out.stdout)
            rows.append({"system": "facebank enroll DIR", "workers": workers, "images": count, "enrolled": summary["stored"],
                         "rejected": summary["rejected"], "seconds": round(elapsed, 1), "images_per_s": round(count / elapsed, 1)})
            log(f"enroll: {workers} stream(s): {rows[-1]['images_per_s']} images/s")
    return {"enrollment": rows}
