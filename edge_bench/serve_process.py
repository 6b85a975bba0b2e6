"""``sdpose-edge serve`` in a child process on 127.0.0.1: the server of the remote tests and of
``scripts/remote_bench.py``. Its own process, because kserve (the server) and tritonclient (the client, used
here to wait for readiness) register the same protobuf names."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """``sdpose-edge serve MODELS --host 127.0.0.1 --port P [--http-port Q] EXTRA``; ``start`` returns once the
    ``sdpose`` model is ready, its output goes to ``log``."""

    def __init__(self, models: "str | Path", log: Path, http: bool = True, extra: Sequence[str] = ()) -> None:
        self.models, self.log, self.extra = Path(models), Path(log), tuple(extra)
        self.port = free_port()
        self.http_port = free_port() if http else None
        self.proc: "subprocess.Popen | None" = None

    @property
    def grpc_url(self) -> str:
        return f"grpc://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout_s: float = 120.0) -> "ServeProcess":
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        cmd = [sys.executable, "-m", "edge_runtime.cli", "serve", str(self.models), "--host", "127.0.0.1",
               "--port", str(self.port), *self.extra]
        if self.http_port:
            cmd += ["--http-port", str(self.http_port)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log.open("a"), stderr=subprocess.STDOUT)
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{self.port}")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                if client.is_model_ready("sdpose"):
                    return self
            except InferenceServerException:
                pass  # not listening yet
            time.sleep(0.2)
        raise RuntimeError(f"serve did not become ready within {timeout_s:.0f} s: {self.log.read_text()[-3000:]}")

    def stop(self, timeout_s: float = 60.0) -> "int | None":
        """SIGTERM and wait (killed if it does not end); its exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
