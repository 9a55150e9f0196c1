"""The HTTP edge: facebank's own JSON API, and the CompreFace- and
DeepStack-compatible routes (http_compreface.py, http_deepstack.py), on the
same engine as gRPC, in the same process.

facebank's JSON API has one route per RPC, `POST /v1/{Service}/{Method}`, with
bodies in the proto's JSON mapping (images as base64 in `data`, or as
multipart files named after the image field). Calls whose requests stream
take a JSON array (or one JSON object per line) and calls whose answers
stream answer one JSON object per line. Nothing here implements a call: every
route calls the engine method that gRPC calls, and typed errors become HTTP
statuses with a JSON body here only.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
import uuid
from typing import Callable

from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from facebank.errors import FacebankError, InvalidArgument, Reason, ResourceExhausted, Unauthenticated
from facebank.server.auth import ApiKeys, required_role
from facebank.server.engine import Engine
from facebank.server.grpc_api import SERVICES, collection_of
from facebank.server.logs import request_done
from facebank.v1 import facebank_pb2 as pb

log = logging.getLogger(__name__)

STATUS = {
    "INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "FAILED_PRECONDITION": 412, "RESOURCE_EXHAUSTED": 429,
    "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504, "CANCELLED": 499,
    "DATA_LOSS": 500, "INTERNAL": 500,
}


def http_status(err: FacebankError) -> int:
    if err.reason == Reason.DISK_FULL:
        return 507
    return STATUS.get(err.code, 500)


def error_response(err: FacebankError) -> JSONResponse:
    return JSONResponse({"error": {"code": err.code, "reason": err.reason, "message": err.message}}, status_code=http_status(err))


class HttpGate:
    """API keys and roles over HTTP: `Authorization: Bearer <key>`, or `x-api-key`
    (and DeepStack's `api_key` form field, which its edge passes in)."""

    def __init__(self, keys: ApiKeys, *, open_allowed: bool) -> None:
        self.keys = keys
        self.open_allowed = open_allowed

    def principal(self, request: Request, secret: str | None = None):
        if not self.keys.any():
            if self.open_allowed:
                return None
            raise Unauthenticated("this server has no API keys; an admin must create one with `facebank keys create`")
        auth = request.headers.get("authorization", "")
        secret = secret or (auth[7:].strip() if auth.lower().startswith("bearer ") else None) or request.headers.get("x-api-key")
        return self.keys.authenticate(secret)

    def check(self, principal, service: str, method: str, collection: str | None, request=None) -> None:
        if principal is not None:
            self.keys.authorize(principal, required_role(service, method, request), collection)


class Limits:
    """Request bodies are bounded before they are read; calls beyond the concurrency bound get 429."""

    def __init__(self, max_bytes: int, max_concurrent: int) -> None:
        self.max_bytes = max_bytes
        self._slots = threading.BoundedSemaphore(max_concurrent)

    async def body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise ResourceExhausted(f"the request body is {int(declared):,} bytes; the limit is {self.max_bytes:,}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_bytes:
                raise ResourceExhausted(f"the request body is over the limit of {self.max_bytes:,} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def slot(self):
        if not self._slots.acquire(blocking=False):
            raise ResourceExhausted("the server is at capacity; retry later", reason=Reason.OVERLOADED)
        return self._slots


class Context:
    """What every HTTP route shares: the engine, the gate, the limits."""

    def __init__(self, engine: Engine, gate: HttpGate, limits: Limits) -> None:
        self.engine = engine
        self.gate = gate
        self.limits = limits

    async def call(self, request: Request, service: str, method: str, message, *, secret: str | None = None):
        """Authorise and run one engine call in a worker thread (the models and FAISS block)."""
        principal = self.gate.principal(request, secret)
        self.gate.check(principal, service, method, collection_of(service, message), message)
        slots = self.limits.slot()
        try:
            return await run_in_threadpool(self.engine.method(service, method), message)
        finally:
            slots.release()


def edge(fn: Callable) -> Callable:
    """Errors to statuses and one log line per request, for every route."""

    async def route(request: Request) -> Response:
        started, status = time.perf_counter(), "OK"
        try:
            response = await fn(request)
            return response
        except FacebankError as err:
            status = err.code
            return error_response(err)
        except Exception:  # a bug: logged with an incident id, answered without details
            status = "INTERNAL"
            incident = uuid.uuid4().hex[:12]
            log.exception("unexpected error in HTTP %s %s (incident %s)", request.method, request.url.path, incident)
            return JSONResponse({"error": {"code": "INTERNAL", "reason": "", "message": f"internal error (incident {incident}); "
                                 "the server log has the details"}}, status_code=500)
        finally:
            request_done(f"HTTP {request.method} {request.url.path}", request.query_params.get("collection"), status, started)

    return route


def _image_fields(message) -> dict[str, object]:
    """The message's Image fields by name (repeated ones too)."""
    return {f.name: f for f in message.DESCRIPTOR.fields if f.message_type is not None and f.message_type.name == "Image"}


async def parse_request(ctx: Context, request: Request, message) -> None:
    """Fill `message` from a JSON body, or from multipart: a `request` part holding the
    JSON and file parts named after its image fields (`image`, `images`, `other_image`)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await read_form(ctx, request)
        text = form.get("request") or "{}"
        _parse_json(text if isinstance(text, str) else (await text.read()).decode(), message)
        fields = _image_fields(message)
        for name, value in form.multi_items():
            if name == "request" or isinstance(value, str):
                continue
            if name not in fields:
                raise InvalidArgument(f"file part {name!r} matches no image field of {message.DESCRIPTOR.name}; use one of {sorted(fields)}",
                                      reason=Reason.BAD_OPTION)
            data = await value.read()
            field = fields[name]
            target = getattr(message, name).add() if field.is_repeated else getattr(message, name)
            target.data, target.source_ref = data, target.source_ref or (value.filename or "")
        return
    if kind not in ("", "application/json"):
        raise InvalidArgument(f"Content-Type {kind!r} is not accepted here; send application/json or multipart/form-data",
                              reason=Reason.BAD_OPTION)
    body = await ctx.limits.body(request)
    _parse_json(body.decode("utf-8", errors="replace") if body else "{}", message)


async def read_form(ctx: Context, request: Request):
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit():
        raise InvalidArgument("a form body needs a Content-Length header", reason=Reason.BAD_OPTION)
    if int(declared) > ctx.limits.max_bytes:
        raise ResourceExhausted(f"the request body is {int(declared):,} bytes; the limit is {ctx.limits.max_bytes:,}")
    try:
        return await request.form(max_files=64, max_fields=256, max_part_size=ctx.limits.max_bytes)
    except Exception as err:  # malformed multipart: the parser's own message
        raise InvalidArgument(f"the multipart body could not be read ({err})", reason=Reason.BAD_OPTION) from None


def _parse_json(text: str, message) -> None:
    try:
        json_format.Parse(text, message)
    except json_format.ParseError as err:
        raise InvalidArgument(f"the JSON body is not a valid {message.DESCRIPTOR.name}: {err}", reason=Reason.BAD_OPTION) from None


def to_json(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def _json_lines(iterator):
    for item in iterator:
        yield json.dumps(to_json(item), ensure_ascii=False) + "\n"


def rpc_routes(ctx: Context) -> list[Route]:
    routes = []
    for service in SERVICES:
        for m in service.methods:
            routes.append(Route(f"/v1/{service.name}/{m.name}", edge(_rpc(ctx, service.name, m)), methods=["POST"]))
    return routes


def _rpc(ctx: Context, service: str, m):
    request_type = getattr(pb, m.input_type.name)

    async def unary(request: Request) -> Response:
        message = request_type()
        await parse_request(ctx, request, message)
        result = await ctx.call(request, service, m.name, message)
        if m.server_streaming:
            answers = iter(result)
            first = await run_in_threadpool(next, answers, None)  # errors (unknown collection...) before the 200 goes out
            head = [] if first is None else [first]
            return StreamingResponse(iterate_in_threadpool(_json_lines(itertools.chain(head, answers))), media_type="application/x-ndjson")
        return JSONResponse(to_json(result))

    async def streaming(request: Request) -> Response:
        body = await ctx.limits.body(request)
        text = body.decode("utf-8", errors="replace").strip()
        try:
            items = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as err:
            raise InvalidArgument(f"send a JSON array of {request_type.__name__} objects, or one per line ({err})", reason=Reason.BAD_OPTION) from None
        messages = []
        for item in items:
            message = request_type()
            try:
                json_format.ParseDict(item, message)
            except json_format.ParseError as err:
                raise InvalidArgument(f"an item is not a valid {request_type.__name__}: {err}", reason=Reason.BAD_OPTION) from None
            messages.append(message)
        principal = ctx.gate.principal(request)
        for message in messages:
            ctx.gate.check(principal, service, m.name, collection_of(service, message), message)
        answers = ctx.engine.method(service, m.name)(iter(messages))
        return StreamingResponse(iterate_in_threadpool(_json_lines(answers)), media_type="application/x-ndjson")

    return streaming if m.client_streaming else unary


def crop_route(ctx: Context) -> Route:
    """GET /v1/collections/{collection}/faces/{face_id}/crop.jpg: a kept face crop as an image
    (for pages and tools that show faces); the same role and errors as GetFaceCrop."""

    async def crop(request: Request) -> Response:
        face_id = request.path_params["face_id"]
        if not face_id.isdigit():
            raise InvalidArgument(f"face id {face_id!r} is not a number", reason=Reason.BAD_OPTION)
        message = pb.FaceRef(collection=request.path_params["collection"], face_id=int(face_id))
        result = await ctx.call(request, "Identities", "GetFaceCrop", message)
        return Response(result.image, media_type=result.media_type, headers={"Cache-Control": "private, no-store"})

    return Route("/v1/collections/{collection}/faces/{face_id}/crop.jpg", edge(crop), methods=["GET"])


def build_app(engine: Engine, keys: ApiKeys, *, open_allowed: bool, max_bytes: int, max_concurrent: int) -> Starlette:
    from facebank.server import console, http_compreface, http_deepstack, openapi

    ctx = Context(engine, HttpGate(keys, open_allowed=open_allowed), Limits(max_bytes, max_concurrent))
    routes = [*rpc_routes(ctx), crop_route(ctx), *http_compreface.routes(ctx, edge), *http_deepstack.routes(ctx), *openapi.routes(),
              *console.routes()]

    async def not_found(request: Request, exc) -> Response:
        return JSONResponse({"error": {"code": "NOT_FOUND", "reason": "", "message": f"no route {request.method} {request.url.path}; "
                                       "the API is described at /openapi.json and /docs"}}, status_code=404)

    async def not_allowed(request: Request, exc) -> Response:
        return JSONResponse({"error": {"code": "INVALID_ARGUMENT", "reason": "", "message": f"{request.method} is not allowed on {request.url.path}"}},
                            status_code=405)

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed})


__all__ = ["Context", "build_app", "edge", "error_response", "parse_request", "read_form", "to_json"]
