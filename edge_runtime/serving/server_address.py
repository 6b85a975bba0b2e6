"""The address of a KServe v2 pose server (``--pose-server``): parsed here, where both the settings check
(:mod:`edge_runtime.config`) and the client (:mod:`edge_runtime.serving.remote`) take it from.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

from edge_runtime.errors import InputError

_URL = re.compile(r"^(grpc|http)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})/?$")


@dataclasses.dataclass(frozen=True)
class ServerAddress:
    """``grpc://HOST:PORT`` or ``http://HOST:PORT``."""

    protocol: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: Any, name: str = "--pose-server") -> "ServerAddress":
        match = _URL.match(url.strip()) if isinstance(url, str) else None
        if match is None or not 0 < int(match.group(3)) < 65536:
            raise InputError(f"{name}: expected grpc://HOST:PORT or http://HOST:PORT (KServe v2), got {url!r}")
        return cls(match.group(1), match.group(2), int(match.group(3)))

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.protocol}://{self.target}"
