"""How a Client reaches an engine: over gRPC, or in the same process.

Both transports carry the same `facebank.v1` messages and raise the same
`facebank.errors` exceptions, so one client interface has two implementations
that the tests run side by side.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterator

import grpc

from facebank.errors import ERRORS_BY_CODE, FacebankError, InternalError, Unavailable

DEFAULT_ADDRESS = "127.0.0.1:50051"
SERVER_ENV = "FACEBANK_SERVER"
API_KEY_ENV = "FACEBANK_API_KEY"
REASON_KEY = "facebank-reason"


class Transport(ABC):
    @abstractmethod
    def call(self, service: str, method: str, request):
        """A unary call."""

    @abstractmethod
    def stream(self, service: str, method: str, request_or_requests) -> Iterator:
        """A call whose answers stream back (the request may be a stream too)."""

    def close(self) -> None:
        pass


class GrpcTransport(Transport):
    def __init__(
        self,
        address: str | None = None,
        *,
        api_key: str | None = None,
        tls_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        timeout: float | None = None,
        max_message_mb: int = 64,
    ) -> None:
        from facebank.v1 import facebank_pb2_grpc as stubs

        self.address = address or os.environ.get(SERVER_ENV) or DEFAULT_ADDRESS
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self._metadata = (("authorization", f"Bearer {key}"),) if key else ()
        self.timeout = timeout
        options = [
            ("grpc.max_receive_message_length", max_message_mb * 2**20),
            ("grpc.max_send_message_length", max_message_mb * 2**20),
        ]
        if tls_ca or tls_cert:
            creds = grpc.ssl_channel_credentials(
                root_certificates=tls_ca.read_bytes() if tls_ca else None,
                private_key=tls_key.read_bytes() if tls_key else None,
                certificate_chain=tls_cert.read_bytes() if tls_cert else None,
            )
            self.channel = grpc.secure_channel(self.address, creds, options)
        else:
            self.channel = grpc.insecure_channel(self.address, options)
        self._stubs = {
            name: getattr(stubs, f"{name}Stub")(self.channel)
            for name in ("Collections", "Enrollment", "Search", "Identities", "Clusters", "Admin")
        }

    def call(self, service, method, request):
        try:
            return getattr(self._stubs[service], method)(request, metadata=self._metadata, timeout=self.timeout)
        except grpc.RpcError as err:
            raise self._error(err) from None

    def stream(self, service, method, request_or_requests):
        try:
            for response in getattr(self._stubs[service], method)(request_or_requests, metadata=self._metadata, timeout=self.timeout):
                yield response
        except grpc.RpcError as err:
            raise self._error(err) from None

    def _error(self, err: grpc.RpcError) -> FacebankError:
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        details = (err.details() if hasattr(err, "details") else "") or str(code)
        reason = ""
        for key, value in (err.trailing_metadata() or ()) if hasattr(err, "trailing_metadata") else ():
            if key == REASON_KEY:
                reason = value
        if code == grpc.StatusCode.UNAVAILABLE:
            return Unavailable(
                f"cannot reach a facebank server at {self.address} ({details}); start one with `facebank serve` "
                f"or point {SERVER_ENV} at it"
            )
        cls = ERRORS_BY_CODE.get(code.name, InternalError)
        return cls(details, reason=reason)

    def close(self) -> None:
        self.channel.close()


class LocalTransport(Transport):
    """The engine in this process (no network); it owns the data directory."""

    def __init__(self, engine) -> None:
        self.engine = engine

    def call(self, service, method, request):
        return self.engine.method(service, method)(request)

    def stream(self, service, method, request_or_requests):
        yield from self.engine.method(service, method)(request_or_requests)

    def close(self) -> None:
        self.engine.close()
