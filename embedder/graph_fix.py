"""Fixing an ONNX graph at load time so that it batches: for exports (SFace's,
among them) that list inputs nothing reads (29 weights left over from
quantisation), list their weights as inputs, and pin the batch to 1. Those
inputs are dropped (so onnxruntime may fold the weights), then the batch
dimension of the inputs and outputs becomes symbolic; the caller checks the
batched graph against the batch-1 one before using it."""

from __future__ import annotations

from facebank.errors import FailedPrecondition, Reason


def _onnx():
    try:
        import onnx
    except ImportError:
        raise FailedPrecondition("this model needs its graph fixed at load, which needs the onnx package: "
                                 "pip install 'facebank[commercial]'", reason=Reason.MODEL_INTEGRITY) from None
    return onnx


def clean_inputs(model: bytes) -> bytes:
    """The same graph without inputs that are weights or that no node reads."""
    graph = _onnx().load_from_string(model)
    weights = {i.name for i in graph.graph.initializer}
    read = {name for node in graph.graph.node for name in node.input}
    inputs = [i for i in graph.graph.input if i.name not in weights and i.name in read]
    del graph.graph.input[:]
    graph.graph.input.extend(inputs)
    return graph.SerializeToString()


def dynamic_batch(model: bytes) -> bytes:
    """The same graph with a symbolic batch dimension on its inputs and outputs."""
    graph = _onnx().load_from_string(model)
    for value in list(graph.graph.input) + list(graph.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    del graph.graph.value_info[:]  # inferred shapes pinned the batch too
    return graph.SerializeToString()


def per_tensor_dequantize(model: bytes) -> bytes:
    """DequantizeLinear nodes with one scale (per-tensor) but a `block_size`
    attribute, which onnxruntime rejects: the attribute is dropped (it means
    nothing for one scale)."""
    onnx = _onnx()
    graph = onnx.load_from_string(model)
    scalar = {i.name for i in graph.graph.initializer if len(i.dims) == 0 or list(i.dims) == [1]}
    for node in graph.graph.node:
        if node.op_type == "DequantizeLinear" and len(node.input) > 1 and node.input[1] in scalar:
            kept = [a for a in node.attribute if a.name != "block_size"]
            del node.attribute[:]
            node.attribute.extend(kept)
    return graph.SerializeToString()
