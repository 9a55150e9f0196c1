"""The gRPC edge: one generic handler per proto service, built from the
descriptors, calling the engine. This is the only place that knows statuses:
a FacebankError becomes its status with its message; anything else is logged
with its traceback and answered INTERNAL without details.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Callable

import grpc

from facebank.errors import FacebankError, Unauthenticated
from facebank.server.auth import ApiKeys, required_role
from facebank.server.engine import Engine
from facebank.server.logs import request_done
from facebank.v1 import facebank_pb2 as pb

log = logging.getLogger(__name__)

REASON_KEY = "facebank-reason"
SERVICES = [pb.DESCRIPTOR.services_by_name[name] for name in pb.DESCRIPTOR.services_by_name]


def status_of(err: FacebankError) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, err.code, grpc.StatusCode.INTERNAL)


class Gate:
    """Authentication and authorization of each call.

    With no API key in the catalog the server is open, which the app allows
    only on a loopback address; once a key exists every call needs one."""

    def __init__(self, keys: ApiKeys, *, open_allowed: bool) -> None:
        self.keys = keys
        self.open_allowed = open_allowed

    def principal(self, context: grpc.ServicerContext):
        if not self.keys.any():
            if self.open_allowed:
                return None
            raise Unauthenticated("this server has no API keys; an admin must create one with `facebank keys create`")
        return self.keys.authenticate(_api_key(context))

    def check(self, principal, service: str, method: str, request) -> None:
        if principal is None:
            return
        self.keys.authorize(principal, required_role(service, method, request), collection_of(service, request))


def collection_of(service: str, request) -> str | None:
    """The collection a request is about: `collection`, or `name` for the Collections
    service's own requests (describe, update, drop); None for one that spans them all."""
    if _has_field(request, "collection"):
        return request.collection
    if service == "Collections" and _has_field(request, "name"):
        return request.name
    return None


def _has_field(message, name: str) -> bool:
    return name in message.DESCRIPTOR.fields_by_name


def _api_key(context: grpc.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and value.lower().startswith("bearer "):
            return value[7:].strip()
        if key == "x-api-key":
            return value.strip()
    return None


def _abort(context: grpc.ServicerContext, err: FacebankError):
    context.set_trailing_metadata(((REASON_KEY, err.reason),) if err.reason else ())
    context.abort(status_of(err), err.message)


def _internal(context: grpc.ServicerContext, where: str):
    incident = uuid.uuid4().hex[:12]
    log.exception("unexpected error in %s (incident %s)", where, incident)
    context.abort(grpc.StatusCode.INTERNAL, f"internal error (incident {incident}); the server log has the details")


def _wrap(fn: Callable, gate: Gate, service: str, method: str, client_streaming: bool, server_streaming: bool,
          on_error: Callable[[FacebankError], None]):
    """The handler gRPC calls: authorize, run the engine method, map errors to statuses."""
    where = f"{service}/{method}"

    def authorized(request_or_iterator, context):
        principal = gate.principal(context)
        if not client_streaming:
            gate.check(principal, service, method, request_or_iterator)
            return request_or_iterator
        return (gate.check(principal, service, method, r) or r for r in request_or_iterator)  # each item, as it comes

    def call(request_or_iterator, context: grpc.ServicerContext):
        started, status = time.perf_counter(), "OK"
        collection = None if client_streaming else collection_of(service, request_or_iterator)
        try:
            return fn(authorized(request_or_iterator, context))
        except FacebankError as err:
            status = err.code
            on_error(err)
            _abort(context, err)
        except Exception:
            status = "INTERNAL"
            _internal(context, where)
        finally:
            request_done(where, collection, status, started)

    def stream(request_or_iterator, context: grpc.ServicerContext):
        started, status = time.perf_counter(), "OK"
        collection = None if client_streaming else collection_of(service, request_or_iterator)
        try:
            for response in fn(authorized(request_or_iterator, context)):
                if not context.is_active():  # the client went away: stop working for it
                    status = "CANCELLED"
                    return
                yield response
        except FacebankError as err:
            status = err.code
            on_error(err)
            _abort(context, err)
        except Exception:
            status = "INTERNAL"
            _internal(context, where)
        finally:
            request_done(where, collection, status, started)

    return stream if server_streaming else call


def generic_handlers(engine: Engine, gate: Gate, on_error: Callable[[FacebankError], None] = lambda err: None) -> list[grpc.GenericRpcHandler]:
    handlers = []
    for service in SERVICES:
        methods = {}
        for m in service.methods:
            req_type, resp_type = getattr(pb, m.input_type.name), getattr(pb, m.output_type.name)
            fn = _wrap(engine.method(service.name, m.name), gate, service.name, m.name, m.client_streaming, m.server_streaming, on_error)
            factory = {
                (False, False): grpc.unary_unary_rpc_method_handler,
                (False, True): grpc.unary_stream_rpc_method_handler,
                (True, False): grpc.stream_unary_rpc_method_handler,
                (True, True): grpc.stream_stream_rpc_method_handler,
            }[(m.client_streaming, m.server_streaming)]
            methods[m.name] = factory(fn, request_deserializer=req_type.FromString, response_serializer=resp_type.SerializeToString)
        handlers.append(grpc.method_handlers_generic_handler(service.full_name, methods))
    return handlers


