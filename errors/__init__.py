"""Typed errors shared by every layer.

Each error carries the gRPC status it maps to (`code`, the status name) and an
optional machine-readable `reason`. The server turns them into a status only at
the edge; the gRPC client turns a status back into the same class, so code that
uses the in-process engine and code that uses a remote server see the same
exceptions.
"""

from __future__ import annotations


class FacebankError(Exception):
    """Base class. `str(err)` is a message a person can act on."""

    code = "INTERNAL"

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class InvalidArgument(FacebankError):
    code = "INVALID_ARGUMENT"


class NotFound(FacebankError):
    code = "NOT_FOUND"


class AlreadyExists(FacebankError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(FacebankError):
    code = "FAILED_PRECONDITION"


class ResourceExhausted(FacebankError):
    code = "RESOURCE_EXHAUSTED"


def disk_full(path, err: object = "") -> ResourceExhausted:
    """The error for a write the disk could not take: names the place and its free space."""
    import shutil

    try:
        free = f"{shutil.disk_usage(path).free / 2**20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    detail = f" ({err})" if err else ""
    return ResourceExhausted(f"cannot write to {path}: the disk is full{detail}, {free}; free space there and retry "
                             "(nothing of this request was stored)", reason=Reason.DISK_FULL)


class Unauthenticated(FacebankError):
    code = "UNAUTHENTICATED"


class PermissionDenied(FacebankError):
    code = "PERMISSION_DENIED"


class Unavailable(FacebankError):
    code = "UNAVAILABLE"


class DeadlineExceeded(FacebankError):
    code = "DEADLINE_EXCEEDED"


class Cancelled(FacebankError):
    code = "CANCELLED"


class DataCorruption(FacebankError):
    """Stored data failed an integrity check (checksum, authentication tag)."""

    code = "DATA_LOSS"


class InternalError(FacebankError):
    code = "INTERNAL"


ERRORS_BY_CODE: dict[str, type[FacebankError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        ResourceExhausted,
        Unauthenticated,
        PermissionDenied,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
        DataCorruption,
        InternalError,
    )
}


class Reason:
    """Machine-readable reasons (the `reason` of an error or a Failure)."""

    EMPTY_IMAGE = "EMPTY_IMAGE"
    UNDECODABLE_IMAGE = "UNDECODABLE_IMAGE"
    IMAGE_TOO_LARGE = "IMAGE_TOO_LARGE"
    IMAGE_TOO_SMALL = "IMAGE_TOO_SMALL"
    ANIMATED_IMAGE = "ANIMATED_IMAGE"
    NO_FACE = "NO_FACE"
    LOW_QUALITY = "LOW_QUALITY"
    BAD_EMBEDDING = "BAD_EMBEDDING"
    BAD_ID = "BAD_ID"
    BAD_METADATA = "BAD_METADATA"
    BAD_OPTION = "BAD_OPTION"
    MODEL_MISMATCH = "MODEL_MISMATCH"
    MODEL_INTEGRITY = "MODEL_INTEGRITY"
    OVERLOADED = "OVERLOADED"
    DISK_FULL = "DISK_FULL"
    NO_CROP = "NO_CROP"
