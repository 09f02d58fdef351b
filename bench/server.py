"""A real `python app.py` on a free loopback port, and concurrent gradio_client callers against it."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]


def example_files() -> list[Path]:
    with (REPO_ROOT / "examples" / "examples.csv").open() as f:
        return [REPO_ROOT / "examples" / row["file"] for row in csv.DictReader(f)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """Context manager: starts app.py, waits until it answers HTTP, stops it on exit."""

    def __init__(self, timeout_s: float = 180, extra_env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.timeout_s = timeout_s
        self.temp = tempfile.TemporaryDirectory(prefix="busi-app-")
        self.env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(self.port),
                    "GRADIO_TEMP_DIR": self.temp.name, "GRADIO_ANALYTICS_ENABLED": "False", **(extra_env or {})}
        self._local = threading.local()

    def __enter__(self):
        self.log = open(Path(self.temp.name) / "server.log", "w+")
        # Started from another folder, as a service manager or a container may start it: the examples
        # and models must not depend on the working directory.
        self.process = subprocess.Popen([sys.executable, str(REPO_ROOT / "app.py")], cwd=self.temp.name, env=self.env,
                                        stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + self.timeout_s
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                urllib.request.urlopen(self.url, timeout=2)
                return self
            except OSError:
                time.sleep(0.5)
        self.process.kill()
        raise TimeoutError(f"app.py did not answer within {self.timeout_s} s:\n{self.log_tail()}")

    def __exit__(self, *exc):
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
        self.temp.cleanup()

    def log_tail(self, chars: int = 3000) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-chars:]

    def client(self):
        """One gradio_client per calling thread (a Client is not meant to be shared across threads).
        The server is plain HTTP on loopback, so certificate checks are off: gradio_client opens a new
        httpx connection per upload and download, and with checks on each one loads the CA bundle
        (a TLS context it never uses here), which made the clients, not the server, the larger CPU
        load on a 2-core machine running both."""
        from gradio_client import Client

        if getattr(self._local, "client", None) is None:
            self._local.client = Client(self.url, verbose=False, ssl_verify=False)
        return self._local.client

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far, from /proc."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def file(path):
        from gradio_client import handle_file

        return handle_file(str(path))

    def rss_mb(self, field: str = "VmRSS") -> float:
        """Resident memory of the server process (VmHWM: its peak) in MB, from /proc."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"{field} not found for pid {self.process.pid}")

    def peak_rss_mb(self) -> float:
        return self.rss_mb("VmHWM")


def percentiles(seconds: list[float]) -> dict:
    """Median and 95th percentile of call durations in seconds, as milliseconds."""
    ms = np.array(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1)}


def call_concurrently(server: AppServer, files: list[Path], workers: int) -> dict:
    """Send one request per file from `workers` threads; latency percentiles, throughput, results."""
    def call(path):
        started = time.perf_counter()
        try:
            result = server.client().predict(server.file(path), api_name="/analyze")
            return time.perf_counter() - started, result, None
        except Exception as error:  # counted and reported, never raised
            return time.perf_counter() - started, None, repr(error)

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        outcomes = list(pool.map(call, files))
    wall = time.perf_counter() - started
    return {
        "rps": len(files) / wall,
        **percentiles([o[0] for o in outcomes]),
        "errors": sum(o[2] is not None for o in outcomes),
        "error_messages": [o[2] for o in outcomes if o[2]][:5],
        "results": [o[1] for o in outcomes],
    }
