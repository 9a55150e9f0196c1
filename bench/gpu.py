"""The GPU paths, when a CUDA device is present: the recognizer run by torch on
the same ONNX weights (fp16), and exact fp16 search over 1M x 512 against the
memory-bandwidth limit. Without a GPU this section says so and measures nothing."""

from __future__ import annotations

import time

import numpy as np

# Peak memory bandwidth by device name (bytes/s), for the fraction reached.
PEAK_BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12, "L40S": 0.864e12}


def run(quick: bool, log=print) -> dict:
    try:
        import torch
    except ImportError:
        return {"gpu": {"skipped": "torch is not installed"}}
    if not torch.cuda.is_available():
        return {"gpu": {"skipped": "no CUDA device in this run"}}
    name = torch.cuda.get_device_name(0)
    peak = next((bw for key, bw in PEAK_BANDWIDTH.items() if key in name), None)
    out = {"device": name, "recognizer": _recognizer(torch, log), "exact_search": _search(torch, peak, quick, log)}
    return {"gpu": out}


def _recognizer(torch, log) -> list[dict]:
    from facebank.embedder import default_model_spec
    from facebank.embedder.torch_onnx import TorchOnnxModel

    spec = default_model_spec()
    rows = []
    for fp16 in (True, False):
        model = TorchOnnxModel(spec.recognizer.verified_bytes(), device="cuda", fp16=fp16)
        for batch in (64, 256, 1024):
            x = np.random.default_rng(0).uniform(-1, 1, (batch, 3, 112, 112)).astype(np.float32)
            model.run(x)
            torch.cuda.synchronize()
            reps = 10
            t0 = time.perf_counter()
            for _ in range(reps):
                model.run(x)
            torch.cuda.synchronize()
            rate = batch * reps / (time.perf_counter() - t0)
            rows.append({"backend": "torch", "fp16": fp16, "batch": batch, "faces_per_s": round(rate, 1)})
            log(f"gpu: recognizer fp16={fp16} batch {batch}: {rate:.0f} faces/s")
    return rows


def _search(torch, peak: float | None, quick: bool, log) -> list[dict]:
    from facebank.index.gpu import TorchExactIndex

    n, dim = 1_000_000, 512
    rng = np.random.default_rng(0)
    index = TorchExactIndex(dim, device="cuda")
    for start in range(0, n, 100_000):
        chunk = rng.standard_normal((100_000, dim)).astype(np.float32)
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        index.add(np.arange(start, start + 100_000), chunk)
    rows = []
    gallery_bytes = n * dim * 2
    for batch in (1, 16, 64, 256):
        q = torch.randn(batch, dim, device="cuda", dtype=torch.float16)
        for _ in range(5):
            torch.topk((q @ index._vectors.T).float(), 10, dim=1)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        reps = 50
        start.record()
        for _ in range(reps):
            torch.topk((q @ index._vectors.T).float(), 10, dim=1)
        end.record()
        torch.cuda.synchronize()
        ms = start.elapsed_time(end) / reps
        row = {"n": n, "dim": dim, "batch": batch, "ms_per_batch": round(ms, 4), "gb_per_s": round(gallery_bytes / (ms / 1000) / 1e9, 1)}
        if peak:
            row["fraction_of_peak_bandwidth"] = round(gallery_bytes / (ms / 1000) / peak, 3)
        rows.append(row)
        log(f"gpu: exact fp16 search 1M x 512, batch {batch}: {ms:.3f} ms")
    return rows
