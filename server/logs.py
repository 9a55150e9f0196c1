"""Server logs: one line per request, and a JSON format for log collectors.

A request line holds the method, the collection, the status and the latency:
never an identity id, a name, metadata, an API key, an image or an embedding.
"""

from __future__ import annotations

import json
import logging
import sys
import time

REQUESTS = logging.getLogger("facebank.requests")
_FIELDS = ("method", "collection", "status", "ms")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z", "level": record.levelname,
               "logger": record.name, "message": record.getMessage()}
        out.update({k: getattr(record, k) for k in _FIELDS if hasattr(record, k)})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        logging.Formatter.converter = time.gmtime
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def request_done(method: str, collection: str | None, status: str, started: float) -> None:
    ms = round((time.perf_counter() - started) * 1000, 2)
    REQUESTS.info("%s %s %s %.1f ms", method, collection or "-", status, ms,
                  extra={"method": method, "collection": collection or "", "status": status, "ms": ms})
