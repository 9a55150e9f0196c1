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
    out = {"device": name, "recognizer": _recognizer(torch, log), "exact_search": _search(torch, peak, log)}
    return {"gpu": out}


def _recognizer(torch, log, device: str = "cuda", batches=(64, 256, 1024)) -> list[dict]:
    """faces/s of the torch backend on the recognizer's ONNX weights, fp32 then fp16,
    with how far fp16 moves the embeddings (lowest cosine to fp32 on the same input)."""
    from facebank.embedder import default_model_spec
    from facebank.embedder.torch_onnx import TorchOnnxModel

    spec = default_model_spec()
    rows, reference = [], {}
    for fp16 in (False, True):
        model = TorchOnnxModel(spec.recognizer.verified_bytes(), device=device, fp16=fp16)
        for batch in batches:
            x = np.random.default_rng(batch).uniform(-1, 1, (batch, 3, 112, 112)).astype(np.float32)
            torch.cuda.reset_peak_memory_stats()
            out = model.run(x)[0]
            torch.cuda.synchronize()
            peak_mb = torch.cuda.max_memory_allocated() / 2**20
            reps = 10
            t0 = time.perf_counter()
            for _ in range(reps):
                model.run(x)
            torch.cuda.synchronize()
            rate = batch * reps / (time.perf_counter() - t0)
            row = {"backend": "torch", "fp16": fp16, "batch": batch, "faces_per_s": round(rate, 1), "peak_gpu_mb": round(peak_mb)}
            unit = out / np.linalg.norm(out, axis=1, keepdims=True)
            if fp16:
                row["min_cosine_to_fp32"] = round(float((unit * reference[batch]).sum(axis=1).min()), 5)
            else:
                reference[batch] = unit
            rows.append(row)
            log(f"gpu: recognizer fp16={fp16} batch {batch}: {rate:.0f} faces/s")
    return rows


def _search(torch, peak: float | None, log, device: str = "cuda", n: int = 1_000_000) -> list[dict]:
    """Per batch size: the device kernel alone (scores and top 10 of 1M, the part the
    bandwidth bound is about), then facebank's whole `search` call (queries from host
    memory, ids back to it)."""
    from facebank.index.gpu import TorchExactIndex

    dim, step = 512, min(n, 100_000)
    rng = np.random.default_rng(0)
    index = TorchExactIndex(dim, device=device)
    for start in range(0, n, step):
        chunk = rng.standard_normal((step, dim)).astype(np.float32)
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        index.add(np.arange(start, start + step), chunk)
    rows = []
    gallery_bytes = n * dim * (2 if index.dtype == torch.float16 else 4)
    for batch in (1, 16, 64, 256):
        host = rng.standard_normal((batch, dim)).astype(np.float32)
        q = torch.from_numpy(host).to(device, index.dtype)
        kernel_ms = _device_ms(torch, lambda q=q: index.top_k_on_device(q, 10))
        index.search(host, 10)  # warm up
        reps = 50
        t0 = time.perf_counter()
        for _ in range(reps):
            index.search(host, 10)  # returns numpy arrays: every call waits for the device
        call_ms = (time.perf_counter() - t0) * 1000 / reps
        row = {"n": n, "dim": dim, "batch": batch, "ms_per_batch": round(kernel_ms, 4), "search_call_ms": round(call_ms, 4),
               "gb_per_s": round(gallery_bytes / (kernel_ms / 1000) / 1e9, 1)}
        if peak:
            row["fraction_of_peak_bandwidth"] = round(gallery_bytes / (kernel_ms / 1000) / peak, 3)
        rows.append(row)
        log(f"gpu: exact fp16 search {n:,} x 512, batch {batch}: kernel {kernel_ms:.3f} ms, whole call {call_ms:.3f} ms")
    return rows


def _device_ms(torch, fn, reps: int = 50) -> float:
    """Mean device time of fn, by CUDA events around reps back-to-back launches."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps
