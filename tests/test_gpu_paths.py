"""The GPU code paths, checked on the CPU: the torch executor of the ONNX
weights against onnxruntime, the torch exact search against FAISS, device
selection, and micro-batching. (On a GPU the same code runs with device='cuda'.)"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from conftest import FACES, open_store, single_person_photos
from facebank.embedder import OnnxFaceEmbedder, decode_image, default_model_spec
from facebank.embedder.batching import BatchingModel
from facebank.embedder.runtime import InferenceModel, OnnxRuntimeModel, load_model, resolve_device
from facebank.embedder.torch_onnx import TorchOnnxModel
from facebank.errors import FailedPrecondition, ResourceExhausted, Unavailable
from facebank.index.factory import IndexFactory, add_all
from facebank.index.gpu import TorchExactIndex
from facebank.index.records import IndexSettings
from facebank.index.segments import Segment
from facebank.index.vector_source import VectorSource
from facebank.index.top_k import exact_top_k
from facebank.index.vectors import FlatIndex

SPEC = default_model_spec()


@pytest.fixture(scope="module")
def torch_models():
    return (TorchOnnxModel(SPEC.detector.verified_bytes(), device="cpu", fp16=False),
            TorchOnnxModel(SPEC.recognizer.verified_bytes(), device="cpu", fp16=False))


def test_torch_executes_the_same_weights_as_onnxruntime(torch_models, embedder):
    detector, recognizer = torch_models
    images = [decode_image(p.data) for p in single_person_photos()["obama"][:3]]
    for img in images:
        canvas = embedder.detector._letterbox(img)[0][None]
        for a, b in zip(detector.run(canvas), embedder.detector_model.run(canvas)):
            assert a.shape == b.shape and np.abs(a - b).max() < 1e-3
    faces = np.random.default_rng(0).uniform(-1, 1, (8, 3, 112, 112)).astype(np.float32)
    a, b = recognizer.run(faces)[0], embedder.recognizer_model.run(faces)[0]
    assert a.shape == b.shape == (8, 512) and np.abs(a - b).max() < 1e-3


def test_the_whole_pipeline_agrees_across_backends(torch_models, embedder):
    detector, recognizer = torch_models
    on_torch = OnnxFaceEmbedder(SPEC, device="cpu", detector_model=detector, recognizer_model=recognizer)
    image = decode_image((FACES / "groups" / "obama_and_biden.jpg").read_bytes())
    a, b = on_torch.analyze([image])[0], embedder.analyze([image])[0]
    assert len(a) == len(b) == 3
    for fa, fb in zip(a, b):
        assert np.abs(fa.box - fb.box).max() < 0.5
        assert float(fa.embedding @ fb.embedding) > 0.9999


def test_torch_backend_refuses_unknown_operators():
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Softmax", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph)
    with pytest.raises(FailedPrecondition, match="Softmax"):
        TorchOnnxModel(model.SerializeToString(), device="cpu")
    assert onnx  # the onnx package parses the graph the torch backend runs


def test_load_model_backend_choice():
    assert isinstance(load_model(SPEC.recognizer, "cpu"), OnnxRuntimeModel)
    assert isinstance(load_model(SPEC.recognizer, "cpu", backend="torch"), TorchOnnxModel)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU-only fallbacks")
def test_device_selection_without_a_gpu():
    assert resolve_device("auto") == "cpu"
    with pytest.raises(FailedPrecondition, match="install facebank\\[gpu\\]"):
        resolve_device("cuda")
    assert IndexFactory("auto").device == "cpu"
    assert isinstance(IndexFactory("auto").build("flat", 8, VectorSource.of(np.arange(3), np.eye(3, 8))), FlatIndex)


@pytest.mark.parametrize("dtype, min_agreement", [("float32", 1.0), ("float16", 0.99)])
def test_torch_exact_search_matches_faiss(dtype, min_agreement):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = rng.permutation(100_000)[:5000].astype(np.int64)
    q = x[:50] + 0.1 * rng.standard_normal((50, 64)).astype(np.float32)
    index = TorchExactIndex(64, device="cpu", dtype=dtype, query_block=16)
    index.add(ids[:3000], x[:3000])
    index.add(ids[3000:], x[3000:])
    flat = FlatIndex(64)
    flat.add(ids, x)
    scores, found = index.search(q, 10)
    ref_scores, ref = flat.search(q, 10)
    agreement = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, ref)])
    assert agreement >= min_agreement
    assert np.abs(scores - ref_scores).max() < (1e-5 if dtype == "float32" else 5e-3)
    gone = ref[:, 0]
    assert index.remove(gone) == len(np.unique(gone))
    assert not np.isin(index.search(q, 10)[1], gone).any()
    info, arrays = index.state()
    restored = IndexFactory("cpu").restore("gpu-exact", 64, info, arrays)  # a GPU snapshot, restored where there is none
    assert isinstance(restored, FlatIndex) and len(restored) == len(index)
    _, sub = index.search_subset(q, 5, ids[::9])  # a metadata filter: exact among the allowed
    keep = ~np.isin(ids[::9], gone)
    _, ref_sub = exact_top_k(q, x[::9][keep], ids[::9][keep], 5)
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(sub, ref_sub)]) >= min_agreement


def test_torch_exact_index_grows_by_small_adds_and_compacts_on_removal():
    """Enrollment adds a few faces at a time: the index grows in place (no copy of
    the gallery per add) and answers exactly as one built in a single add."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(3000, dtype=np.int64) * 7 + 1
    grown = TorchExactIndex(32, device="cpu", dtype="float32")
    start = 0
    for size in rng.integers(1, 12, 3000):
        grown.add(ids[start : start + size], x[start : start + size])
        start += size
        if start >= 3000:
            break
    whole = TorchExactIndex(32, device="cpu", dtype="float32")
    whole.add(ids, x)
    q = x[::50] + 0.05 * rng.standard_normal((60, 32)).astype(np.float32)
    assert len(grown) == 3000 and np.array_equal(np.sort(grown.ids()), ids)
    assert np.array_equal(grown.search(q, 10)[1], whole.search(q, 10)[1])
    assert grown.remove(ids[:1000]) == 1000 and len(grown) == 2000
    grown.add(ids[:5], x[:5])  # ids can come back (a face moved back into this segment)
    assert len(grown) == 2005
    ref = FlatIndex(32)
    ref.add(np.concatenate([ids[1000:], ids[:5]]), np.concatenate([x[1000:], x[:5]]))
    assert np.array_equal(grown.search(q, 10)[1], ref.search(q, 10)[1])


def test_a_gpu_exact_build_allocates_its_vectors_once_at_their_final_size():
    """A build adds the source chunk by chunk: growing by half as chunks came left the
    buffer at 1.47x the faces (and 2.5x in GPU memory while the last growth copied)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((100_000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(100_000, dtype=np.int64) * 3 + 5
    built = add_all(TorchExactIndex(16, device="cpu", dtype="float32"), VectorSource.of(ids, x))
    assert len(built) == 100_000 and len(built._buffer) == 100_000
    flat = FlatIndex(16)
    flat.add(ids, x)
    q = x[::1000] + 0.05 * rng.standard_normal((100, 16)).astype(np.float32)
    assert np.array_equal(built.search(q, 10)[1], flat.search(q, 10)[1])
    built.add(ids[:3] + 1, x[:3])   # and it still grows for enrollments after the build
    assert len(built) == 100_003


def test_a_gpu_exact_segment_is_of_the_exact_family_so_the_upkeep_leaves_it(tmp_path):
    """The torch exact index (what a CUDA machine without faiss-gpu builds for an exact
    segment) named no family: the upkeep found it due a rebuild into 'flat' at every pass
    and built another that named none either."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    index = add_all(TorchExactIndex(16, device="cpu", dtype="float32"), VectorSource.of(np.arange(300, dtype=np.int64), x))
    assert index.family == FlatIndex(16).family
    store = open_store(tmp_path / "data")
    try:
        assert store.segments.wants_rebuild(Segment(1, "enrolled", 16, IndexSettings(), index)) is None
    finally:
        store.close()


class SlowModel(InferenceModel):
    """A real recognizer that also records its batch sizes and takes a little longer."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []

    def run(self, batch):
        import time

        self.batches.append(len(batch))
        time.sleep(0.02)
        return self.inner.run(batch)


def test_micro_batching_shares_model_calls_across_concurrent_requests(embedder):
    slow = SlowModel(embedder.recognizer_model)
    batching = BatchingModel(slow, max_batch=64, max_wait_ms=20)
    faces = np.random.default_rng(2).uniform(-1, 1, (16, 3, 112, 112)).astype(np.float32)
    results: dict[int, np.ndarray] = {}

    def one(i):
        results[i] = batching.run(faces[i : i + 1])[0]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batching.close()
    assert sum(slow.batches) == 16 and len(slow.batches) < 16  # requests shared calls
    direct = embedder.recognizer_model.run(faces)[0]
    for i in range(16):
        assert np.abs(results[i][0] - direct[i]).max() < 1e-4


def test_micro_batching_queue_is_bounded(embedder):
    import time

    gate, entered = threading.Event(), threading.Event()

    class Blocked(InferenceModel):
        def run(self, batch):
            entered.set()
            gate.wait()
            return [batch]

    batching = BatchingModel(Blocked(), max_batch=1, max_wait_ms=0, max_queue=2)
    workers = [threading.Thread(target=batching.run, args=(np.zeros((1, 1)),), daemon=True) for _ in range(3)]
    try:
        workers[0].start()
        assert entered.wait(timeout=30)  # the first call is in the model, out of the queue
        for w in workers[1:]:
            w.start()
        deadline = time.monotonic() + 30
        while batching._queue.qsize() < 2 and time.monotonic() < deadline:  # one in the model, two waiting
            time.sleep(0.01)
        with pytest.raises(ResourceExhausted, match="queue is full"):
            batching.run(np.zeros((1, 1)))
    finally:
        gate.set()  # never leave the workers blocked, even when the check fails
    for w in workers:
        w.join(timeout=10)
    assert not any(w.is_alive() for w in workers)
    batching.close()


def test_micro_batching_close_never_strands_a_caller(monkeypatch):
    """A close that lands between a caller's check and its enqueue must not leave
    the call behind the close marker, where no one would ever answer it."""
    import queue

    class Echo(InferenceModel):
        def run(self, batch):
            return [batch * 2]

    class CloseDuringPut(queue.Queue):
        def put_nowait(self, item):
            closer = threading.Thread(target=batching.close, daemon=True)
            closer.start()
            closer.join(timeout=0.3)  # let the close run now, if nothing holds it back
            super().put_nowait(item)

    with monkeypatch.context() as m:
        m.setattr(queue, "Queue", CloseDuringPut)
        batching = BatchingModel(Echo(), max_batch=4, max_wait_ms=0)
    answers = []
    caller = threading.Thread(target=lambda: answers.append(batching.run(np.ones((1, 1)))[0]), daemon=True)
    caller.start()
    caller.join(timeout=10)
    assert not caller.is_alive(), "the call was queued behind the close and never answered"
    assert answers[0][0, 0] == 2.0
    with pytest.raises(Unavailable, match="shutting down"):
        batching.run(np.zeros((1, 1)))


def test_embedder_with_micro_batching_gives_the_same_faces(embedder):
    shared = OnnxFaceEmbedder(SPEC, device="cpu", micro_batch_wait_ms=5)
    images = [decode_image(p.data) for p in single_person_photos()["kit_harington"]]
    out: dict[int, list] = {}
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, shared.analyze([images[i]])[0])) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shared.close()
    for i, image in enumerate(images):
        reference = embedder.analyze([image])[0]
        assert float(out[i][0].embedding @ reference[0].embedding) > 0.9999
