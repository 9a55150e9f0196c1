"""A description of the machine a run was made on, stored with its results."""

from __future__ import annotations

import os
import platform


def describe() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = 0
    try:
        import psutil

        memory = psutil.virtual_memory().total
    except ImportError:
        pass
    info = {
        "cpu": cpu, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": round(memory / 2**30, 1), "python": platform.python_version(), "platform": platform.platform(),
        "gpu": None,
    }
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info["gpu"] = {"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1)}
    except ImportError:
        pass
    versions = {}
    for name in ("numpy", "faiss", "onnxruntime", "grpc", "hnswlib", "pymilvus", "torch", "infomap"):
        try:
            module = __import__(name)
            versions[name] = getattr(module, "__version__", "?")
        except ImportError:
            continue
    info["versions"] = versions
    return info
