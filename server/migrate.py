"""Admin/MigrateCollection: a collection moved to another shipped model, every face
re-embedded from its kept crop (index/migration.py does the work; this edge picks
the model, times a sample for the estimate and streams progress)."""

from __future__ import annotations

import os
import time
from typing import Iterator

import numpy as np

from facebank.embedder import decode_image, encode_crop
from facebank.embedder.models import ARCFACE_TEMPLATE_112, MODELS, ModelSpec, model_spec
from facebank.errors import FailedPrecondition, InvalidArgument, Reason
from facebank.index import crop_fill, migration
from facebank.server import validate
from facebank.server.engine import Parts
from facebank.server.faces import FacePipeline, sha256_hex
from facebank.v1 import facebank_pb2 as pb

SAMPLE = 16
PLAN_LISTED = 100


def crop_embedder(pipeline: FacePipeline):
    """Encoded crops -> unit vectors of the pipeline's model."""

    def embed(crops: list[bytes]) -> np.ndarray:
        pixels = np.stack([decode_image(c) for c in crops])
        return pipeline.embedder.embed_crops(pixels)

    return embed


def _target_spec(name: str) -> ModelSpec:
    if not name:
        raise InvalidArgument(f"name the model to migrate to: one of {', '.join(MODELS)}", reason=Reason.BAD_OPTION)
    spec = model_spec(name)
    if spec.crop_size != 112 or tuple(spec.template) != tuple(ARCFACE_TEMPLATE_112):
        raise FailedPrecondition(f"model {name!r} aligns faces differently from the kept 112x112 crops; it cannot be migrated to from them",
                                 reason=Reason.BAD_OPTION)
    return spec


def migrate_collection(p: Parts, req: pb.MigrateCollectionRequest) -> Iterator[pb.MigrationProgress]:
    coll = p.store.collection(validate.collection_name(req.collection))
    spec = _target_spec(req.model)
    target = migration.Target(req.model, spec.model_id, spec.embedding_dim, spec.default_threshold)
    found = migration.plan(p.store, coll.name, target)  # refuses a migration to the model it has
    pipeline = p.pipeline(spec)
    embed = crop_embedder(pipeline)
    sample = migration.sample_crops(p.store, coll.name, SAMPLE)
    estimate = 0.0
    if sample:
        started = time.perf_counter()
        embed(sample)
        estimate = (time.perf_counter() - started) / len(sample) * max(0, found.faces - found.staged)
    yield pb.MigrationProgress(stage="plan", done=found.staged, total=found.faces, model_id=spec.model_id,
                               faces_without_crops=len(found.without_crops), without_crops=found.without_crops[:PLAN_LISTED],
                               already_staged=found.staged, estimate_s=estimate)
    if req.dry_run:
        return
    batch = int(os.environ.get("FACEBANK_MIGRATE_BATCH", migration.BATCH))
    for step in migration.migrate(p.store, coll.name, target, embed, batch=max(1, batch)):
        yield pb.MigrationProgress(stage=step.stage, done=step.done, total=step.total, model_id=spec.model_id)


def list_cropless_images(p: Parts, req: pb.CroplessImagesRequest) -> Iterator[pb.CroplessImages]:
    name = validate.collection_name(req.collection)
    for chunk in crop_fill.cropless_images(p.store, name):
        yield pb.CroplessImages(image_sha256=chunk)


def fill_crops(p: Parts, req: pb.FillCropsRequest) -> pb.FillCropsResponse:
    coll = p.store.collection(validate.collection_name(req.collection))
    data = req.image.data
    (faces,) = p.faces_for(coll).analyze([data], max_faces=validate.MAX_FACES_PER_IMAGE)
    sha = sha256_hex(data)
    seen = [crop_fill.SeenFace(f.box.tolist(), np.asarray(f.embedding, np.float32), encode_crop(f.crop) if f.crop is not None else b"")
            for f in faces]
    done = crop_fill.fill_crops(p.store, coll.name, sha, seen)
    return pb.FillCropsResponse(image_sha256=sha, filled=done.filled, unmatched=done.unmatched)
