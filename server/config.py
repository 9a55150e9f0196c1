"""Server configuration: one place for every setting, with its default."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from facebank.errors import InvalidArgument, Reason

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_HTTP = "127.0.0.1:8000"
DEFAULT_DATA = "./facebank-data"
DEFAULT_THRESHOLD = 0.40
DEFAULT_COLLECTION = "default"


@dataclass
class ServerConfig:
    data_dir: Path = Path(DEFAULT_DATA)
    listen: str = DEFAULT_LISTEN
    http: str = DEFAULT_HTTP              # the HTTP/JSON API (and the compatible APIs); "off" for none
    keys_dir: Path | None = None          # default: <data_dir>/keys
    device: str = "auto"                  # auto | cpu | cuda (models and search)
    backend: str = "auto"                 # auto | onnxruntime | torch (how the models run)
    model: str = "default"                # a shipped pair: default (InsightFace, non-commercial) | sface (commercial use)
    model_spec: Path | None = None        # JSON spec of another ArcFace-style pair (wins over `model`)
    vectors: str = "faiss"                # where vectors live: faiss (in process), milvus://HOST:PORT, milvus-lite:PATH.db
    role: str = "primary"                 # primary (the catalog, every call) | search (no catalog: searches from Milvus)
    primary_id: str = ""                  # search nodes: which primary's registry, when several publish on one Milvus
    threads: int = 0                      # inference threads; 0 = every core
    workers: int = 16                     # RPC handler threads
    max_concurrent_rpcs: int = 64         # beyond this, RESOURCE_EXHAUSTED
    max_message_mb: int = 64
    micro_batch_wait_ms: float = 0.0      # > 0: share model calls across requests (GPU)
    default_threshold: float | None = None  # new collections' threshold; None: the model's own
    compact_after_forget_s: float = 300.0
    keep_crops: bool = True               # new collections keep face crops unless they say otherwise
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None     # set: clients must present a certificate it signed
    background: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def resolved_keys_dir(self) -> Path:
        return Path(self.keys_dir) if self.keys_dir else Path(self.data_dir) / "keys"

    def host_port(self, address: str | None = None, option: str = "--listen") -> tuple[str, int]:
        address = self.listen if address is None else address
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
            raise InvalidArgument(f"{option} {address!r} must be HOST:PORT, e.g. {DEFAULT_LISTEN}", reason=Reason.BAD_OPTION)
        return host.strip("[]") or "0.0.0.0", int(port)

    @property
    def http_enabled(self) -> bool:
        return self.http.lower() not in ("", "off", "none", "no")

    def is_loopback(self, address: str | None = None) -> bool:
        host, _ = self.host_port(address)
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @property
    def all_loopback(self) -> bool:
        """Every listener on a loopback address (the only case without API keys)."""
        return self.is_loopback() and (not self.http_enabled or self.is_loopback(self.http))


def env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None
