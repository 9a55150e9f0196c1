"""Inference backends: the compute function the pipeline is given.

An `InferenceModel` runs one ONNX graph on a batch. The pipeline never knows
which backend it holds: onnxruntime on the CPU (the default), onnxruntime's
CUDA provider (with onnxruntime-gpu), or the same ONNX weights executed by
torch on a CUDA device (`facebank.embedder.torch_onnx`).
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod

import numpy as np

from facebank.errors import FailedPrecondition, InvalidArgument, Reason
from facebank.embedder.models import ModelFile

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


class InferenceModel(ABC):
    """One ONNX graph, ready to run on batches (NCHW float32)."""

    device: str = "cpu"
    backend: str = ""

    @abstractmethod
    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run the graph; returns its outputs in graph order."""


class OnnxRuntimeModel(InferenceModel):
    backend = "onnxruntime"

    def __init__(self, model: bytes, *, device: str = "cpu", threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        self._session = ort.InferenceSession(model, sess_options=options, providers=providers)
        self._input = self._session.get_inputs()[0].name
        self.device = "cuda" if "CUDAExecutionProvider" in self._session.get_providers() else "cpu"

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self._session.run(None, {self._input: np.ascontiguousarray(batch, dtype=np.float32)})


def onnxruntime_has_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def torch_has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_device(preference: str) -> str:
    """'auto' becomes 'cuda' when any CUDA backend is usable, else 'cpu'."""
    if preference not in DEVICES:
        raise InvalidArgument(f"device must be one of {', '.join(DEVICES)}, not {preference!r}", reason=Reason.BAD_OPTION)
    if preference == "auto":
        return "cuda" if (onnxruntime_has_cuda() or torch_has_cuda()) else "cpu"
    if preference == "cuda" and not (onnxruntime_has_cuda() or torch_has_cuda()):
        raise FailedPrecondition(
            "device 'cuda' was asked for, but neither onnxruntime-gpu nor torch sees a CUDA device; "
            "install facebank[gpu] or use --device cpu"
        )
    return preference


BACKENDS = ("auto", "onnxruntime", "torch")


def _check_batching(original: InferenceModel, fixed: InferenceModel, file: ModelFile) -> None:
    """The fixed graph on a batch of 3 gives what the original gives image by image (1e-5)."""
    probe = np.random.default_rng(0).uniform(0, 255, (3, 3, 112, 112)).astype(np.float32)
    batched = fixed.run(probe)[0]
    single = np.concatenate([original.run(probe[i : i + 1])[0] for i in range(3)])
    if not np.allclose(batched, single, atol=1e-5, rtol=0):
        raise FailedPrecondition(f"{file.path}: its graph, fixed to batch, does not answer as the original "
                                 f"(max difference {float(np.abs(batched - single).max()):.2e}); refusing it", reason=Reason.MODEL_INTEGRITY)


def load_model(file: ModelFile, device: str, *, threads: int = 0, fp16: bool = True, backend: str = "auto",
               fix_graph: bool = False, fix_batch: bool = False) -> InferenceModel:
    """Verify the file's SHA-256, then load it on the backend for `device`:
    onnxruntime (CPU, or CUDA with onnxruntime-gpu), else torch on CUDA.
    fix_graph: drop unused inputs and per-tensor block sizes; fix_batch: also make the
    batch symbolic, checked against the batch-1 graph (graph_fix.py)."""
    if backend not in BACKENDS:
        raise InvalidArgument(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}", reason=Reason.BAD_OPTION)
    data = file.verified_bytes()
    if fix_graph or fix_batch:
        from facebank.embedder.graph_fix import clean_inputs, dynamic_batch, per_tensor_dequantize

        data = per_tensor_dequantize(clean_inputs(data))
    if fix_batch:
        original = data
        data = dynamic_batch(original)
        _check_batching(OnnxRuntimeModel(original, device="cpu", threads=threads), OnnxRuntimeModel(data, device="cpu", threads=threads), file)
    if backend == "torch" or (backend == "auto" and device == "cuda" and not onnxruntime_has_cuda()):
        from facebank.embedder.torch_onnx import TorchOnnxModel

        return TorchOnnxModel(data, device=device, fp16=fp16)
    return OnnxRuntimeModel(data, device=device, threads=threads)
