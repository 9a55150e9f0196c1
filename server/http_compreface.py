"""CompreFace-compatible routes (its docs/Rest-API-description.md), translated to
engine calls. A CompreFace "subject" is a facebank identity, an "example" (image
id) a face; an x-api-key scoped to exactly one collection works in that
collection, any other key (or none, on an open loopback server) in `default`.

Where facebank is stricter it says so: deleting a subject or its examples is a
forget (crypto-shredded, with a receipt: `facebank_receipt` in the answer), a
subject cannot be renamed (ids are permanent: 400), similarity is the cosine
similarity of the embeddings, an example's image (`.../faces/{image_id}/img`)
is the aligned face facebank keeps (not the uploaded photo), and the age, gender, mask and calculator plugins
are not offered (no embedding ever leaves facebank through these routes).
"""

from __future__ import annotations

import base64
import binascii
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from facebank.errors import FacebankError, InvalidArgument, NotFound, Reason
from facebank.v1 import facebank_pb2 as pb

PREFIX = "/api/v1"
CODES = {"NO_FACE": 28, "NOT_FOUND": 24, "INVALID_ARGUMENT": 26, "UNAUTHENTICATED": 34, "PERMISSION_DENIED": 34}


def routes(ctx, edge) -> list[Route]:
    def compat(fn):
        async def route(request: Request) -> Response:
            try:
                return await fn(ctx, request)
            except FacebankError as err:  # CompreFace's error shape: {"message", "code"}
                from facebank.server.http_api import http_status

                code = CODES.get(err.reason) or CODES.get(err.code) or 0
                return JSONResponse({"message": err.message, "code": code, "facebank_reason": err.reason or err.code},
                                    status_code=http_status(err))
        return edge(route)

    return [
        Route(f"{PREFIX}/recognition/recognize", compat(recognize), methods=["POST"]),
        Route(f"{PREFIX}/recognition/faces", compat(add_example), methods=["POST"]),
        Route(f"{PREFIX}/recognition/faces", compat(list_examples), methods=["GET"]),
        Route(f"{PREFIX}/recognition/faces", compat(delete_examples), methods=["DELETE"]),
        Route(f"{PREFIX}/recognition/faces/{{image_id}}", compat(delete_example), methods=["DELETE"]),
        Route(f"{PREFIX}/recognition/faces/{{image_id}}/verify", compat(verify_example), methods=["POST"]),
        Route(f"{PREFIX}/recognition/faces/{{image_id}}/img", compat(example_image), methods=["GET"]),
        Route(f"{PREFIX}/recognition/subjects", compat(add_subject), methods=["POST"]),
        Route(f"{PREFIX}/recognition/subjects", compat(list_subjects), methods=["GET"]),
        Route(f"{PREFIX}/recognition/subjects", compat(delete_subjects), methods=["DELETE"]),
        Route(f"{PREFIX}/recognition/subjects/{{subject}}", compat(rename_subject), methods=["PUT"]),
        Route(f"{PREFIX}/recognition/subjects/{{subject}}", compat(delete_subject), methods=["DELETE"]),
        Route(f"{PREFIX}/detection/detect", compat(detect), methods=["POST"]),
        Route(f"{PREFIX}/verification/verify", compat(verify), methods=["POST"]),
    ]


# -- helpers -------------------------------------------------------------------------

def collection_for(ctx, request: Request) -> str:
    principal = ctx.gate.principal(request)
    return principal.collections[0] if principal is not None and len(principal.collections) == 1 else "default"


def _int(request: Request, name: str, default: int, low: int = 0, high: int = 1_000_000) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidArgument(f"{name} must be an integer, not {raw!r}", reason=Reason.BAD_OPTION) from None
    if not low <= value <= high:
        raise InvalidArgument(f"{name} is {value}; use {low} to {high}", reason=Reason.BAD_OPTION)
    return value


def _float(request: Request, name: str, default: float) -> float:
    raw = request.query_params.get(name)
    try:
        return default if raw in (None, "") else float(raw)
    except ValueError:
        raise InvalidArgument(f"{name} must be a number between 0 and 1, not {raw!r}", reason=Reason.BAD_OPTION) from None


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("1", "true", "yes")


async def image_from(ctx, request: Request, field: str = "file") -> pb.Image:
    """The image of a request: a multipart file part `field`, or JSON {"field": base64}."""
    from facebank.server.http_api import read_form

    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await read_form(ctx, request)
        part = form.get(field)
        if part is None or isinstance(part, str):
            raise InvalidArgument(f"send the image as a multipart file part named {field!r}", reason=Reason.EMPTY_IMAGE)
        return pb.Image(data=await part.read(), source_ref=part.filename or "")
    if kind == "application/json":
        body = await ctx.limits.body(request)
        try:
            value = __import__("json").loads(body or b"{}").get(field)
        except (ValueError, AttributeError):
            raise InvalidArgument("the JSON body could not be read", reason=Reason.BAD_OPTION) from None
        if not isinstance(value, str):
            raise InvalidArgument(f"send the image base64-encoded in the JSON field {field!r}", reason=Reason.EMPTY_IMAGE)
        try:
            return pb.Image(data=base64.b64decode(value.split(",", 1)[-1], validate=True))
        except (binascii.Error, ValueError):
            raise InvalidArgument(f"the JSON field {field!r} is not valid base64", reason=Reason.UNDECODABLE_IMAGE) from None
    raise InvalidArgument("send the image as multipart/form-data (field 'file') or JSON {\"file\": \"<base64>\"}", reason=Reason.BAD_OPTION)


def _box(face: pb.DetectedFace) -> dict:
    b = face.box
    return {"probability": round(face.detection_score, 5), "x_max": round(b.x1), "y_max": round(b.y1), "x_min": round(b.x0), "y_min": round(b.y0)}


def _face(face: pb.DetectedFace, plugins: set[str]) -> dict:
    out = {"box": _box(face)}
    if "landmarks" in plugins:
        out["landmarks"] = [[round(p.x), round(p.y)] for p in face.landmarks]
    return out


def _plugins(request: Request) -> set[str]:
    return {p.strip() for p in request.query_params.get("face_plugins", "").split(",") if p.strip()}


def _status(out: dict, ctx, started: float, request: Request) -> dict:
    if _flag(request, "status"):
        model = ctx.engine.parts.faces.model_id
        out["plugins_versions"] = {"detector": f"facebank.{model}", "calculator": f"facebank.{model}"}
        for face in out.get("result", []):
            face["execution_time"] = {"detector": round((time.perf_counter() - started) * 1000, 1)}
    return out


async def _all_identities(ctx, request: Request, collection: str) -> list[pb.Identity]:
    out, token = [], ""
    while True:
        page = await ctx.call(request, "Identities", "ListIdentities",
                              pb.ListIdentitiesRequest(collection=collection, page_size=1000, page_token=token))
        out.extend(page.identities)
        token = page.next_page_token
        if not token:
            return out


async def _forget(ctx, request: Request, collection: str, subject: str) -> pb.ForgetReceipt:
    return await ctx.call(request, "Identities", "Forget", pb.ForgetRequest(collection=collection, identity_id=subject))


def _receipt(r: pb.ForgetReceipt) -> dict:
    return {"forgotten": True, "sequence": r.sequence, "hash": r.hash, "faces_removed": r.removed.get("faces", 0),
            "note": "crypto-shredded and erased, not hidden; see `facebank receipts`"}


# -- recognition -----------------------------------------------------------------------

async def recognize(ctx, request: Request) -> Response:
    started = time.perf_counter()
    collection = collection_for(ctx, request)
    limit, count = _int(request, "limit", 0, 0, 1000), _int(request, "prediction_count", 1, 1, 100)
    det_min, plugins = _float(request, "det_prob_threshold", 0.0), _plugins(request)
    image = await image_from(ctx, request)
    options = pb.SearchOptions(top_k=count, threshold=-1.0)  # CompreFace lists the most similar whatever the score
    r = await ctx.call(request, "Search", "SearchByImage", pb.SearchByImageRequest(
        collection=collection, image=image, options=options, max_faces=limit, quality_filter=pb.QUALITY_FILTER_NONE))
    result = [{**_face(f.face, plugins), "subjects": [{"subject": m.identity_id, "similarity": round(m.score, 5)} for m in f.matches]}
              for f in r.faces if f.face.detection_score >= det_min]
    if not result:
        raise InvalidArgument("No face is found in the given image", reason=Reason.NO_FACE)
    return JSONResponse(_status({"result": result}, ctx, started, request))


async def detect(ctx, request: Request) -> Response:
    started = time.perf_counter()
    limit, det_min, plugins = _int(request, "limit", 0, 0, 1000), _float(request, "det_prob_threshold", 0.0), _plugins(request)
    image = await image_from(ctx, request)
    r = await ctx.call(request, "Search", "DetectFaces", pb.DetectFacesRequest(collection=collection_for(ctx, request), image=image,
                                                                                max_faces=limit))
    result = [_face(f, plugins) for f in r.faces if f.detection_score >= det_min]
    if not result:
        raise InvalidArgument("No face is found in the given image", reason=Reason.NO_FACE)
    return JSONResponse(_status({"result": result}, ctx, started, request))


async def verify(ctx, request: Request) -> Response:
    """Faces of target_image compared with the largest face of source_image."""
    from facebank.server.http_api import read_form

    started = time.perf_counter()
    limit, plugins = _int(request, "limit", 0, 0, 1000), _plugins(request)
    form = await read_form(ctx, request)
    images = {}
    for name in ("source_image", "target_image"):
        part = form.get(name)
        if part is None or isinstance(part, str):
            raise InvalidArgument(f"send {name} as a multipart file part", reason=Reason.EMPTY_IMAGE)
        images[name] = pb.Image(data=await part.read(), source_ref=part.filename or "")
    collection = collection_for(ctx, request)
    first = await ctx.call(request, "Search", "Verify", pb.VerifyRequest(
        collection=collection, image=images["source_image"], other_image=images["target_image"]))
    matches = []
    for n in range(1, (min(limit, first.faces_in_other_image) if limit else first.faces_in_other_image) + 1):
        r = first if n == 1 else await ctx.call(request, "Search", "Verify", pb.VerifyRequest(
            collection=collection, image=images["source_image"], other_image=images["target_image"], other_face=n))
        matches.append({**_face(r.other_face, plugins), "similarity": round(r.score, 5)})
    out = {"result": [{"source_image_face": _face(first.face, plugins), "face_matches": matches}]}
    return JSONResponse(_status(out, ctx, started, request))


# -- examples (faces) ---------------------------------------------------------------------

async def add_example(ctx, request: Request) -> Response:
    subject = request.query_params.get("subject", "")
    image = await image_from(ctx, request)
    r = await ctx.call(request, "Enrollment", "Enroll", pb.EnrollRequest(
        collection=collection_for(ctx, request), identity_id=subject, images=[image]))
    return JSONResponse({"image_id": str(r.images[0].face.face_id), "subject": r.identity.id})


async def list_examples(ctx, request: Request) -> Response:
    collection = collection_for(ctx, request)
    page, size = _int(request, "page", 0), _int(request, "size", 20, 1, 1000)
    subject = request.query_params.get("subject")
    if subject:
        people = [await ctx.call(request, "Identities", "GetIdentity", pb.IdentityRef(collection=collection, identity_id=subject))]
    else:
        people = await _all_identities(ctx, request, collection)
    faces = [{"image_id": str(f.face_id), "subject": p.id} for p in people for f in p.faces]
    total = len(faces)
    return JSONResponse({"faces": faces[page * size : (page + 1) * size], "page_number": page, "page_size": size,
                         "total_pages": -(-total // size), "total_elements": total})


async def delete_examples(ctx, request: Request) -> Response:
    """Every example of a subject (or of everyone): facebank forgets those identities."""
    collection = collection_for(ctx, request)
    subject = request.query_params.get("subject")
    subjects = [subject] if subject else [p.id for p in await _all_identities(ctx, request, collection)]
    receipts = [await _forget(ctx, request, collection, s) for s in subjects]
    return JSONResponse({"deleted": sum(r.removed.get("faces", 0) for r in receipts), "facebank_receipts": [_receipt(r) for r in receipts]})


async def delete_example(ctx, request: Request) -> Response:
    collection = collection_for(ctx, request)
    r = await ctx.call(request, "Identities", "DeleteFace", pb.DeleteFaceRequest(collection=collection, face_id=_image_id(request)))
    return JSONResponse({"image_id": str(r.face.face_id), "subject": r.face.identity_id})


async def verify_example(ctx, request: Request) -> Response:
    started = time.perf_counter()
    plugins = _plugins(request)
    image = await image_from(ctx, request)
    r = await ctx.call(request, "Search", "Verify", pb.VerifyRequest(collection=collection_for(ctx, request), image=image,
                                                                     face_id=_image_id(request)))
    return JSONResponse(_status({"result": [{**_face(r.face, plugins), "similarity": round(r.score, 5)}]}, ctx, started, request))


async def example_image(ctx, request: Request) -> Response:
    """The example's image: facebank keeps the aligned face, not the photo it came from."""
    r = await ctx.call(request, "Identities", "GetFaceCrop", pb.FaceRef(collection=collection_for(ctx, request), face_id=_image_id(request)))
    return Response(r.image, media_type=r.media_type, headers={"Cache-Control": "private, no-store"})


def _image_id(request: Request) -> int:
    raw = request.path_params["image_id"]
    if not raw.isdigit():
        raise NotFound(f"no example has id {raw!r} (facebank's image ids are numbers)")
    return int(raw)


# -- subjects -------------------------------------------------------------------------

async def add_subject(ctx, request: Request) -> Response:
    body = await ctx.limits.body(request)
    try:
        subject = __import__("json").loads(body or b"{}").get("subject", "")
    except (ValueError, AttributeError):
        raise InvalidArgument('send {"subject": "<name>"}', reason=Reason.BAD_OPTION) from None
    r = await ctx.call(request, "Identities", "CreateIdentity", pb.CreateIdentityRequest(
        collection=collection_for(ctx, request), identity_id=subject or ""))
    return JSONResponse({"subject": r.id})


async def list_subjects(ctx, request: Request) -> Response:
    return JSONResponse({"subjects": [p.id for p in await _all_identities(ctx, request, collection_for(ctx, request))]})


async def rename_subject(ctx, request: Request) -> Response:
    raise InvalidArgument("facebank identity ids are permanent and cannot be renamed; set a display name instead "
                          "(PUT /v1/Identities/UpdateIdentity), or enroll under the new id and forget the old one",
                          reason=Reason.BAD_OPTION)


async def delete_subject(ctx, request: Request) -> Response:
    subject = request.path_params["subject"]
    receipt = await _forget(ctx, request, collection_for(ctx, request), subject)
    return JSONResponse({"subject": subject, "facebank_receipt": _receipt(receipt)})


async def delete_subjects(ctx, request: Request) -> Response:
    collection = collection_for(ctx, request)
    subjects = [p.id for p in await _all_identities(ctx, request, collection)]
    receipts = [await _forget(ctx, request, collection, s) for s in subjects]
    return JSONResponse({"deleted": len(receipts), "facebank_receipts": [_receipt(r) for r in receipts]})
