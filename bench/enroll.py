"""Enrollment end to end: `facebank enroll DIR` (the bulk CLI, over gRPC, into a
fresh server) on a folder of real photos replicated with small random crops
and flips, so every file is a new image; with face crops kept and without
(throughput and catalog bytes per face side by side), against a plain
onnxruntime loop over the same files with the same two models (read, decode,
detect, embed each face; nothing stored): the floor a script would get."""

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


def _catalog_bytes(data_dir: Path) -> dict:
    """The catalog file's size and the stored bytes of the kept crops (rows as written: sealed, tagged)."""
    import lmdb

    path = data_dir / "catalog"
    env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=64, subdir=True)
    try:
        crops = env.open_db(b"crops", create=False)
        with env.begin(db=crops) as txn:
            sizes = [len(v) for v in txn.cursor().iternext(keys=False, values=True)]
    finally:
        env.close()
    return {"catalog_bytes": (path / "data.mdb").stat().st_size, "crop_rows": len(sizes), "crop_bytes": sum(sizes)}


# (bulk CLI streams, serve --crops/--no-crops): the cost of keeping crops is (2, True) beside (2, False)
CONFIGS = ((1, True), (2, True), (2, False), (1, False))


def run(quick: bool, log=print) -> dict:
    count = 100 if quick else 3000
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        make_folder(folder, count)
        rows.append(_plain_loop(folder, count))
        log(f"enroll: plain onnxruntime loop: {rows[-1]['images_per_s']} images/s")
        for workers, crops in CONFIGS:
            address = f"127.0.0.1:{_port()}"
            data = Path(tmp) / f"data{workers}{'c' if crops else 'n'}"
            server = subprocess.Popen([sys.executable, "-m", "facebank", "serve", "--data", str(data), "--listen", address, "--http", "off",
                                       "--crops" if crops else "--no-crops"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
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
            sizes = _catalog_bytes(data)
            stored = max(1, summary["stored"])
            rows.append({"system": "facebank enroll DIR", "workers": workers, "crops": crops, "images": count, "enrolled": summary["stored"],
                         "rejected": summary["rejected"], "seconds": round(elapsed, 1), "images_per_s": round(count / elapsed, 1),
                         "catalog_bytes_per_face": round(sizes["catalog_bytes"] / stored),
                         "crop_bytes_per_face": round(sizes["crop_bytes"] / max(1, sizes["crop_rows"])) if sizes["crop_rows"] else 0})
            log(f"enroll: {workers} stream(s), crops {'on' if crops else 'off'}: {rows[-1]['images_per_s']} images/s, "
                f"{rows[-1]['catalog_bytes_per_face']:,} catalog bytes per face")
    loop = rows[0]["images_per_s"]
    for row in rows[1:]:
        row["vs_plain_loop"] = round(row["images_per_s"] / loop, 2)
    return {"enrollment": rows}


def _plain_loop(folder: Path, count: int) -> dict:
    """The same photos through the same two ONNX files the usual way (bench.embedding's
    plain sessions: default options, a 640 x 640 canvas, one recognizer call per face)."""
    from bench.embedding import PlainSession, SquareDetector, naive_analyze
    from facebank.embedder import decode_image, default_model_spec

    spec = default_model_spec()
    detector, recognizer = SquareDetector(PlainSession(spec.detector.path), spec), PlainSession(spec.recognizer.path)
    files = sorted(folder.rglob("*.jpg"))
    naive_analyze([decode_image(files[0].read_bytes())], detector, recognizer, spec)  # warm up
    started = time.perf_counter()
    faces = sum(naive_analyze([decode_image(f.read_bytes())], detector, recognizer, spec)[0] for f in files)
    elapsed = time.perf_counter() - started
    return {"system": "plain onnxruntime loop", "workers": 1, "crops": False, "images": count, "enrolled": faces, "rejected": {},
            "seconds": round(elapsed, 1), "images_per_s": round(count / elapsed, 1), "catalog_bytes_per_face": 0, "crop_bytes_per_face": 0}
