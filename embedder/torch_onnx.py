"""Running the same ONNX weights with torch (for CUDA where onnxruntime-gpu is
not installed).

A small interpreter of ONNX graphs: the nodes run in the file's (topological)
order, each mapped to a torch operation. It covers the operators of ArcFace
recognizers and SCRFD detectors (convolutions, PReLU, batch norm, GEMM,
nearest resize and the shape arithmetic around them) and refuses any other
graph with a clear error. Why not onnx2torch: it imports torchvision
unconditionally, which does not load beside the CPU torch build CI uses.
Parity with onnxruntime is tested on the CPU (within 1e-3).
"""

from __future__ import annotations

import numpy as np

from facebank.embedder.runtime import InferenceModel
from facebank.errors import FailedPrecondition

SUPPORTED = {
    "Conv", "PRelu", "Relu", "Sigmoid", "Add", "Mul", "Sub", "Flatten", "Gemm", "BatchNormalization",
    "Shape", "Constant", "Gather", "Unsqueeze", "Concat", "Slice", "Cast", "Resize", "Transpose", "Reshape",
}


class TorchOnnxModel(InferenceModel):
    backend = "torch"

    def __init__(self, model: bytes, *, device: str = "cuda", fp16: bool = True) -> None:
        import onnx
        import torch
        from onnx import numpy_helper

        graph = onnx.load_from_string(model).graph
        unknown = sorted({n.op_type for n in graph.node} - SUPPORTED)
        if unknown:
            raise FailedPrecondition(
                f"the torch backend cannot run operators {unknown}; install onnxruntime-gpu (facebank[gpu]) or use --device cpu"
            )
        self.torch = torch
        self.device = device
        self.dtype = torch.float16 if fp16 and device != "cpu" else torch.float32
        self.nodes = [(n.op_type, list(n.input), list(n.output), {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}) for n in graph.node]
        self.inputs = [i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}]
        self.outputs = [o.name for o in graph.output]
        self.weights = {}
        for tensor in graph.initializer:
            array = numpy_helper.to_array(tensor)
            t = torch.from_numpy(array.copy())
            self.weights[tensor.name] = t.to(device=device, dtype=self.dtype) if array.dtype.kind == "f" else t
        for op, _, outputs, attrs in self.nodes:
            if op == "Constant":
                value = numpy_helper.to_array(attrs["value"])
                self.weights[outputs[0]] = torch.from_numpy(value.copy())
        # Drop each intermediate after its last reader: a large batch keeps only the
        # live activations on the device, not every layer's.
        last_read = {name: i for i, (_, inputs, _, _) in enumerate(self.nodes) for name in inputs}
        keep = set(self.weights) | set(self.outputs)
        self.free_after: list[list[str]] = [[] for _ in self.nodes]
        for name, i in last_read.items():
            if name and name not in keep:
                self.free_after[i].append(name)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        torch = self.torch
        with torch.inference_mode():
            values = dict(self.weights)
            values[self.inputs[0]] = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device, self.dtype)
            for (op, inputs, outputs, attrs), done in zip(self.nodes, self.free_after):
                if op != "Constant":
                    args = [values[i] if i else None for i in inputs]
                    values[outputs[0]] = _OPS[op](torch, args, attrs)
                for name in done:
                    del values[name]
            return [values[name].float().cpu().numpy() for name in self.outputs]


def _conv(torch, args, a):
    x, w = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    pads = list(a.get("pads", [0, 0, 0, 0]))
    half = len(pads) // 2
    if pads[:half] != pads[half:]:
        x = torch.nn.functional.pad(x, [p for i in reversed(range(half)) for p in (pads[i], pads[i + half])])
        pads = [0] * len(pads)
    return torch.nn.functional.conv2d(
        x, w, bias, stride=tuple(a.get("strides", (1, 1))), padding=tuple(pads[:half]),
        dilation=tuple(a.get("dilations", (1, 1))), groups=int(a.get("group", 1)),
    )


def _gemm(torch, args, a):
    x, w = args[0], args[1]
    if a.get("transA", 0):
        x = x.t()
    w = w.t() if a.get("transB", 0) else w
    out = a.get("alpha", 1.0) * (x @ w)
    if len(args) > 2 and args[2] is not None:
        out = out + a.get("beta", 1.0) * args[2]
    return out


def _batch_norm(torch, args, a):
    x, scale, bias, mean, var = args[:5]
    return torch.nn.functional.batch_norm(x, mean, var, scale, bias, training=False, eps=a.get("epsilon", 1e-5))


def _flatten(torch, args, a):
    x, axis = args[0], a.get("axis", 1)
    return x.reshape(int(np.prod(x.shape[:axis])) if axis else 1, -1)


def _slice(torch, args, a):
    x, starts, ends = args[0], args[1].tolist(), args[2].tolist()
    axes = args[3].tolist() if len(args) > 3 and args[3] is not None else list(range(len(starts)))
    steps = args[4].tolist() if len(args) > 4 and args[4] is not None else [1] * len(starts)
    index = [slice(None)] * x.dim()
    for s, e, ax, st in zip(starts, ends, axes, steps):
        index[ax] = slice(s, min(e, x.shape[ax]) if e >= 0 else e, st)
    return x[tuple(index)]


def _resize(torch, args, a):
    if a.get("mode", b"nearest") not in (b"nearest", "nearest"):
        raise FailedPrecondition("the torch backend only supports nearest-neighbour Resize")
    x = args[0]
    sizes = args[3] if len(args) > 3 and args[3] is not None and args[3].numel() else None
    if sizes is not None:
        return torch.nn.functional.interpolate(x, size=tuple(int(s) for s in sizes.tolist()[2:]), mode="nearest")
    scales = args[2].tolist()
    return torch.nn.functional.interpolate(x, scale_factor=tuple(scales[2:]), mode="nearest")


def _shape(torch, args, a):
    return torch.tensor(list(args[0].shape), dtype=torch.int64)


def _gather(torch, args, a):
    data, index = args
    axis = a.get("axis", 0)
    picked = torch.index_select(data, axis, index.reshape(-1).to(torch.int64))
    return picked.reshape(tuple(data.shape[:axis]) + tuple(index.shape) + tuple(data.shape[axis + 1 :]))


def _unsqueeze(torch, args, a):
    out = args[0]
    for axis in sorted(a["axes"]):
        out = out.unsqueeze(axis)
    return out


def _reshape(torch, args, a):
    x, shape = args
    target = [x.shape[i] if s == 0 else s for i, s in enumerate(shape.tolist())]
    return x.reshape(target)


def _cast(torch, args, a):
    kinds = {1: torch.float32, 6: torch.int32, 7: torch.int64, 10: torch.float16, 11: torch.float64}
    return args[0].to(kinds[a["to"]])


_OPS = {
    "Conv": _conv,
    "PRelu": lambda torch, args, a: torch.where(args[0] >= 0, args[0], args[0] * args[1]),
    "Relu": lambda torch, args, a: torch.relu(args[0]),
    "Sigmoid": lambda torch, args, a: torch.sigmoid(args[0]),
    "Add": lambda torch, args, a: args[0] + args[1],
    "Mul": lambda torch, args, a: args[0] * args[1],
    "Sub": lambda torch, args, a: args[0] - args[1],
    "Flatten": _flatten,
    "Gemm": _gemm,
    "BatchNormalization": _batch_norm,
    "Shape": _shape,
    "Gather": _gather,
    "Unsqueeze": _unsqueeze,
    "Concat": lambda torch, args, a: torch.cat([t.reshape(-1) if t.dim() == 0 else t for t in args], dim=a.get("axis", 0)),
    "Slice": _slice,
    "Cast": _cast,
    "Resize": _resize,
    "Transpose": lambda torch, args, a: args[0].permute(*a["perm"]),
    "Reshape": _reshape,
}
