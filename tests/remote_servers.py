"""Real servers on 127.0.0.1 for data on the web and on object storage, in subprocesses.

``python tests/remote_servers.py ROOT LOG`` serves the folder ROOT over HTTP and
answers ``Range:`` requests with 206 partial content, as web servers and object
stores do for GDAL's ``/vsicurl/``; it prints its port, then appends one JSON line
per request to LOG. :func:`range_server` starts it; :func:`moto_s3` starts moto's
S3-compatible server (``python -m moto.server``) and sets the environment
variables terraseg reads for credentials and the endpoint.

The servers run in processes of their own: GDAL holds the interpreter lock while
it opens a file, so a server thread of the reading process would never answer.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.conftest import _free_port, _wait_for_http

RANGE = re.compile(r"bytes=(\d*)-(\d*)$")
S3_ENVIRONMENT = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")


class RangeHandler(SimpleHTTPRequestHandler):
    """Files of the served folder; a single ``Range:`` gets 206 and those bytes."""

    log_file: Path

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_response(self, code: int, message: str | None = None) -> None:
        record = {"method": self.command, "path": self.path, "range": self.headers.get("Range")}
        with self.log_file.open("a") as log:
            log.write(json.dumps({**record, "status": int(code)}) + "\n")
        super().send_response(code, message)

    def do_GET(self) -> None:
        match = RANGE.match(self.headers.get("Range", ""))
        file = Path(self.translate_path(self.path))
        if match is None or not file.is_file():
            super().do_GET()
            return
        data = file.read_bytes()
        first, last = match.groups()
        start = int(first) if first else max(len(data) - int(last), 0)
        end = min(int(last), len(data) - 1) if first and last else len(data) - 1
        if start >= len(data):
            self.send_error(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            return
        self.send_response(HTTPStatus.PARTIAL_CONTENT)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(data[start : end + 1])


@dataclass
class RangeServer:
    """A running range server: its URL and the requests it answered."""

    url: str
    log: Path

    def requests(self) -> list[dict[str, Any]]:
        """Every request answered so far: method, path, range, status."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def ranged(self, name: str) -> list[dict[str, Any]]:
        """GETs of ``name`` answered with partial content (206)."""
        return [r for r in self.requests() if r["path"] == f"/{name}" and r["status"] == 206]


@contextmanager
def range_server(root: Path, log: Path) -> Iterator[RangeServer]:
    """Serve ``root`` on 127.0.0.1 from a subprocess; requests are logged to ``log``."""
    command = [sys.executable, __file__, str(root), str(log)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield RangeServer(f"http://127.0.0.1:{port}", log)
    finally:
        process.terminate()
        process.wait(timeout=20)


@contextmanager
def moto_s3(workdir: Path) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1, with credentials and endpoint in the environment.

    Yields the endpoint URL. Only ``AWS_ENDPOINT_URL`` names the endpoint (GDAL's
    settings are derived from it by terraseg). s3fs's cached clients are cleared
    before and after, so none of another server is reused.
    """
    import s3fs

    port = _free_port()
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with (workdir / "moto.log").open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=out)
    endpoint = f"http://127.0.0.1:{port}"
    saved = {key: os.environ.get(key) for key in (*S3_ENVIRONMENT, "AWS_DEFAULT_REGION")}
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing-secret",
        AWS_ENDPOINT_URL=endpoint,
        AWS_DEFAULT_REGION="us-east-1",
    )
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        _wait_for_http(f"{endpoint}/moto-api/", process, timeout=60)
        yield endpoint
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        process.terminate()
        process.wait(timeout=20)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _serve(root: str, log: str) -> None:
    RangeHandler.log_file = Path(log)
    handler = type("Handler", (RangeHandler,), {})

    def make(*args: Any) -> RangeHandler:
        return handler(*args, directory=root)  # type: ignore[no-any-return]

    server = ThreadingHTTPServer(("127.0.0.1", 0), make)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2])
