"""The OpenAPI document of the HTTP API, generated from the proto descriptors
(so it describes exactly what the routes accept), and interactive docs at
/docs from the Swagger UI files installed with the package (no CDN)."""

from __future__ import annotations

from functools import lru_cache

from google.protobuf.descriptor import FieldDescriptor
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from facebank.v1 import facebank_pb2 as pb

_SCALARS = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"}, FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64"}, FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_INT32: {"type": "integer"}, FieldDescriptor.TYPE_UINT32: {"type": "integer", "minimum": 0},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"}, FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}

COMPAT = {
    "/api/v1/recognition/recognize": ("post", "CompreFace: recognize faces (multipart `file` or JSON base64 `file`)"),
    "/api/v1/recognition/faces": ("post", "CompreFace: add an example of `subject`; GET lists them, DELETE forgets"),
    "/api/v1/recognition/faces/{image_id}/img": ("get", "CompreFace: an example's image (the aligned face facebank keeps)"),
    "/api/v1/recognition/subjects": ("get", "CompreFace: list subjects; POST adds one, DELETE forgets every one"),
    "/api/v1/detection/detect": ("post", "CompreFace: detect faces"),
    "/api/v1/verification/verify": ("post", "CompreFace: compare source_image with target_image"),
    "/v1/vision/face/recognize": ("post", "DeepStack: recognize (form `image`, `min_confidence`, `api_key`)"),
    "/v1/vision/face/register": ("post", "DeepStack: register `userid` with one or several images"),
}


def _field_schema(field) -> dict:
    if field.message_type is not None:
        if field.message_type.GetOptions().map_entry:
            return {"type": "object", "additionalProperties": _field_schema(field.message_type.fields_by_name["value"])}
        item = {"$ref": f"#/components/schemas/{field.message_type.name}"}
    elif field.enum_type is not None:
        item = {"type": "string", "enum": [v.name for v in field.enum_type.values]}
    else:
        item = dict(_SCALARS[field.type])
    if field.is_repeated:
        return {"type": "array", "items": item}
    return item


@lru_cache(maxsize=1)
def document() -> dict:
    schemas = {
        message.name: {"type": "object", "properties": {f.name: _field_schema(f) for f in message.fields}}
        for message in pb.DESCRIPTOR.message_types_by_name.values()
    }
    schemas["Error"] = {"type": "object", "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string"}, "reason": {"type": "string"}, "message": {"type": "string"}}}}}
    paths = {}
    for service in pb.DESCRIPTOR.services_by_name.values():
        for m in service.methods:
            body = {"$ref": f"#/components/schemas/{m.input_type.name}"}
            if m.client_streaming:
                body = {"type": "array", "items": body}
            answer = {"$ref": f"#/components/schemas/{m.output_type.name}"}
            media = "application/x-ndjson" if m.server_streaming or m.client_streaming else "application/json"
            paths[f"/v1/{service.name}/{m.name}"] = {"post": {
                "tags": [service.name], "operationId": f"{service.name}_{m.name}",
                "summary": f"{service.name}/{m.name}" + (" (answers one JSON object per line)" if media != "application/json" else ""),
                "requestBody": {"required": True, "content": {"application/json": {"schema": body}, "multipart/form-data": {
                    "schema": {"type": "object", "properties": {"request": {"type": "string", "description": "the request as JSON"}},
                               "additionalProperties": {"type": "string", "format": "binary"}}}}},
                "responses": {"200": {"description": "OK", "content": {media: {"schema": answer}}},
                              "default": {"description": "an error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
            }}
    paths["/v1/collections/{collection}/faces/{face_id}/crop.jpg"] = {"get": {
        "tags": ["Identities"], "summary": "a kept face crop as a JPEG (as Identities/GetFaceCrop; enroll role)",
        "parameters": [{"name": "collection", "in": "path", "required": True, "schema": {"type": "string"}},
                       {"name": "face_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
        "responses": {"200": {"description": "the crop", "content": {"image/jpeg": {}}},
                      "default": {"description": "an error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
    }}
    for path, (method, summary) in COMPAT.items():
        paths[path] = {method: {"tags": ["compatible"], "summary": summary, "responses": {"200": {"description": "OK"}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "facebank", "version": "1", "description": "facebank's HTTP API: every facebank.v1 RPC as POST /v1/{Service}/{Method} "
                 "with the proto's JSON mapping; and the CompreFace- and DeepStack-compatible routes."},
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                                               "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}}},
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": paths,
    }


DOCS = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>facebank API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head><body><div id="ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script></body></html>"""


def routes() -> list:
    import swagger_ui_bundle

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(document())

    async def docs(request: Request) -> Response:
        return HTMLResponse(DOCS)

    return [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Mount("/docs/assets", app=StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets"),
    ]
