"""Serving a busy process's ``/metrics`` from a small child process, so a scrape never waits for its GIL.

Measured (``benchmarks/ingest_metrics.py``): ``prometheus_client``'s HTTP
server as a thread inside ``lake ingest`` answered in 181 ms at the median
and 750 ms at p95 while the local runner kept the interpreter busy, and the
scrapes' own broker round trips slowed the ingest. So the process renders
its exposition every ``every`` seconds into a file (written aside, renamed)
and this module, run as a child (``python -m lake.observability.exposition_server``),
answers ``GET /metrics`` with the file's bytes: the answer is at most
``every`` seconds old (the ingest's counters move once per pass anyway).
The child exits when its parent does.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable

__all__ = ["ExpositionServer"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ExpositionServer:
    """``start()``: render now, start the child on ``host:port``, re-render every ``every`` seconds."""

    def __init__(self, render: Callable[[], bytes], port: int, host: str = "127.0.0.1", every: float = 1.0):
        self._render, self._port, self._host, self._every = render, port, host, every
        self._dir = tempfile.mkdtemp(prefix="lake-metrics-")
        self.path = os.path.join(self._dir, "metrics")
        self._child: subprocess.Popen | None = None

    def _write(self) -> None:
        partial = f"{self.path}.partial"
        with open(partial, "wb") as f:
            f.write(self._render())
        os.replace(partial, self.path)

    def start(self) -> None:
        self._write()
        self._child = subprocess.Popen(
            [sys.executable, "-m", __name__, self.path, self._host, str(self._port), str(os.getpid())],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self._child.stdout is not None
        line = self._child.stdout.readline()  # "ready", or nothing when it could not listen
        if line.strip() != "ready":
            error = self._child.stderr.read().strip().splitlines() if self._child.stderr else []
            raise OSError(f"metrics on {self._host}:{self._port}: {error[-1] if error else 'the server did not start'}")
        threading.Thread(target=self._loop, name="metrics-render", daemon=True).start()

    def _loop(self) -> None:
        while True:
            time.sleep(self._every)
            try:
                self._write()
            except Exception:  # a render that failed once (a broker away): the previous file stays
                continue

    def stop(self) -> None:
        if self._child is not None and self._child.poll() is None:
            self._child.terminate()
            self._child.wait(5)


def _serve(path: str, host: str, port: int, parent: int) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                self.send_error(404)
                return
            try:
                with open(path, "rb") as f:
                    body = f.read()
            except OSError:
                self.send_error(503)
                return
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet: scrapes every 15 s
            pass

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True

    def watch_parent() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        server.shutdown()

    threading.Thread(target=watch_parent, daemon=True).start()
    print("ready", flush=True)
    server.serve_forever()
    try:
        os.remove(path)
        os.rmdir(os.path.dirname(path))
    except OSError:
        pass


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
