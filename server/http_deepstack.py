"""DeepStack-compatible face routes (form fields in, `success` and `predictions`
out), translated to engine calls, in the collection `default` (or the one
collection an API key is scoped to). The API key may come as DeepStack's
`api_key` form field. `confidence` is the cosine similarity of the embeddings;
below `min_confidence` (default: the collection's threshold) a face is
`unknown`. Deleting a user is a facebank forget: crypto-shredded, with a
receipt (`facebank_receipt`), not hidden.
"""

from __future__ import annotations

import time

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from facebank.errors import FacebankError, InvalidArgument, Reason
from facebank.v1 import facebank_pb2 as pb


def routes(ctx) -> list[Route]:
    def compat(fn):
        async def route(request: Request) -> Response:
            from facebank.server.http_api import http_status
            from facebank.server.logs import request_done

            started, status = time.perf_counter(), "OK"
            try:
                form = await _form(ctx, request)
                out = await fn(ctx, request, form)
                return JSONResponse({"success": True, **out, "duration": 0})
            except FacebankError as err:
                status = err.code
                return JSONResponse({"success": False, "error": err.message, "facebank_reason": err.reason or err.code},
                                    status_code=http_status(err))
            finally:
                request_done(f"HTTP POST {request.url.path}", None, status, started)
        return route

    return [
        Route("/v1/vision/face", compat(detect), methods=["POST"]),
        Route("/v1/vision/face/", compat(detect), methods=["POST"]),
        Route("/v1/vision/face/register", compat(register), methods=["POST"]),
        Route("/v1/vision/face/recognize", compat(recognize), methods=["POST"]),
        Route("/v1/vision/face/list", compat(list_faces), methods=["POST"]),
        Route("/v1/vision/face/delete", compat(delete), methods=["POST"]),
    ]


async def _form(ctx, request: Request):
    from facebank.server.http_api import read_form

    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not kind and request.headers.get("content-length", "0") == "0":
        return FormData()  # /list and the like: a POST with no fields
    if kind not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise InvalidArgument("send form fields (multipart/form-data), as DeepStack's API takes them", reason=Reason.BAD_OPTION)
    return await read_form(ctx, request)


def _collection(ctx, request: Request, form) -> tuple[str, str | None]:
    secret = form.get("api_key") if isinstance(form.get("api_key"), str) else None
    principal = ctx.gate.principal(request, secret)
    return (principal.collections[0] if principal is not None and len(principal.collections) == 1 else "default"), secret


async def _images(form, names=None) -> list[pb.Image]:
    out = []
    for name, value in form.multi_items():
        if not isinstance(value, str) and (names is None or name in names):
            out.append(pb.Image(data=await value.read(), source_ref=value.filename or ""))
    if not out:
        raise InvalidArgument("no image was sent; send it as the form file field 'image'", reason=Reason.EMPTY_IMAGE)
    return out


def _box(face: pb.DetectedFace) -> dict:
    b = face.box
    return {"x_min": round(b.x0), "y_min": round(b.y0), "x_max": round(b.x1), "y_max": round(b.y1)}


async def detect(ctx, request: Request, form) -> dict:
    collection, secret = _collection(ctx, request, form)
    image = (await _images(form, {"image"}))[0]
    r = await ctx.call(request, "Search", "DetectFaces", pb.DetectFacesRequest(collection=collection, image=image), secret=secret)
    return {"predictions": [{"confidence": round(f.detection_score, 5), **_box(f)} for f in r.faces]}


async def register(ctx, request: Request, form) -> dict:
    collection, secret = _collection(ctx, request, form)
    userid = form.get("userid")
    if not isinstance(userid, str) or not userid:
        raise InvalidArgument("user id not specified: send the form field 'userid'", reason=Reason.BAD_ID)
    images = await _images(form)
    await ctx.call(request, "Enrollment", "Enroll", pb.EnrollRequest(collection=collection, identity_id=userid, images=images), secret=secret)
    return {"message": "face added"}


async def recognize(ctx, request: Request, form) -> dict:
    collection, secret = _collection(ctx, request, form)
    image = (await _images(form, {"image"}))[0]
    raw = form.get("min_confidence")
    try:
        min_confidence = float(raw) if isinstance(raw, str) and raw else None
    except ValueError:
        raise InvalidArgument(f"min_confidence must be a number, not {raw!r}", reason=Reason.BAD_OPTION) from None
    if min_confidence is None:  # DeepStack's default becomes the collection's open-set threshold
        described = await ctx.call(request, "Collections", "DescribeCollection", pb.CollectionRef(name=collection), secret=secret)
        min_confidence = described.threshold
    options = pb.SearchOptions(top_k=1, threshold=-1.0)  # every face gets its best match; `unknown` is decided here
    r = await ctx.call(request, "Search", "SearchByImage", pb.SearchByImageRequest(
        collection=collection, image=image, options=options, quality_filter=pb.QUALITY_FILTER_NONE), secret=secret)
    predictions = []
    for f in r.faces:
        best = f.matches[0] if f.matches else None
        known = best is not None and best.score >= min_confidence
        predictions.append({"confidence": round(best.score, 5) if known else 0, "userid": best.identity_id if known else "unknown", **_box(f.face)})
    return {"predictions": predictions}


async def list_faces(ctx, request: Request, form) -> dict:
    collection, secret = _collection(ctx, request, form)
    faces, token = [], ""
    while True:
        page = await ctx.call(request, "Identities", "ListIdentities",
                              pb.ListIdentitiesRequest(collection=collection, page_size=1000, page_token=token), secret=secret)
        faces += [p.id for p in page.identities]
        token = page.next_page_token
        if not token:
            return {"faces": faces}


async def delete(ctx, request: Request, form) -> dict:
    collection, secret = _collection(ctx, request, form)
    userid = form.get("userid")
    if not isinstance(userid, str) or not userid:
        raise InvalidArgument("user id not specified: send the form field 'userid'", reason=Reason.BAD_ID)
    r = await ctx.call(request, "Identities", "Forget", pb.ForgetRequest(collection=collection, identity_id=userid), secret=secret)
    return {"facebank_receipt": {"forgotten": True, "sequence": r.sequence, "hash": r.hash}}
