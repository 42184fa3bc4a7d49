"""A small in-memory S3 endpoint on 127.0.0.1, for tests that must not need MinIO.

It speaks the subset pyarrow's S3FileSystem and delta-rs use: PUT (also
conditional, ``If-None-Match: *``, as MinIO honours it), GET (with ranges),
HEAD, DELETE, ListObjectsV2 and multipart uploads, path-style addressing
only. Signatures are not checked. Every request is recorded, so a test can
see what a client sent.

The server runs in a child process: some deltalake calls keep the GIL while
they wait for the network, so a server thread in the test's own process
would never get to answer them.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.server
import json
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from xml.sax.saxutils import escape

__all__ = ["FakeS3", "Request"]


@dataclass
class Request:
    method: str
    bucket: str
    key: str
    query: dict
    headers: dict = field(default_factory=dict)  # lower-cased names
    status: int = 0  # what the fake answered


class FakeS3:
    """``with FakeS3() as s3:`` serves on ``s3.url`` until the block ends."""

    def __enter__(self) -> "FakeS3":
        self._proc = subprocess.Popen([sys.executable, __file__], stdout=subprocess.PIPE, text=True)
        self.url = self._proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self._proc.kill()
            raise RuntimeError("the fake S3 server did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._proc.kill()
        self._proc.wait()

    def _state(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/_fake/state", timeout=10) as resp:
            return json.load(resp)

    @property
    def requests(self) -> list:
        return [Request(**r) for r in self._state()["requests"]]

    def keys(self, bucket: str) -> list:
        return sorted(k for b, k in self._state()["objects"] if b == bucket)


class _Store:
    def __init__(self) -> None:
        self.objects: dict = {}  # (bucket, key) -> (bytes, mtime)
        self.requests: list = []
        self._uploads: dict = {}  # upload id -> {part number: bytes}
        self._lock = threading.Lock()


def serve() -> None:
    store = _Store()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(store))
    server.daemon_threads = True
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


def _etag(body: bytes) -> str:
    return '"%s"' % hashlib.md5(body).hexdigest()


def _dechunk(raw: bytes) -> bytes:
    """The payload of an ``aws-chunked`` body (the AWS SDK's streaming upload with checksums)."""
    out, pos = bytearray(), 0
    while True:
        eol = raw.index(b"\r\n", pos)
        size = int(raw[pos:eol].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += raw[eol + 2 : eol + 2 + size]
        pos = eol + 2 + size + 2


def _handler(s3: _Store):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        # -- plumbing ---------------------------------------------------------
        def _parse(self) -> Request:
            url = urllib.parse.urlsplit(self.path)
            bucket, _, key = url.path.lstrip("/").partition("/")
            req = Request(
                self.command,
                bucket,
                urllib.parse.unquote(key),
                dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True)),
                {k.lower(): v for k, v in self.headers.items()},
            )
            s3.requests.append(req)
            self._req = req
            return req

        def _body(self, req: Request) -> bytes:
            if req.headers.get("transfer-encoding") == "chunked":
                raw = bytearray()
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b""):
                            pass
                        break
                    raw += self.rfile.read(size)
                    self.rfile.readline()
                raw = bytes(raw)
            else:
                raw = self.rfile.read(int(req.headers.get("content-length") or 0))
            return _dechunk(raw) if "aws-chunked" in req.headers.get("content-encoding", "") else raw

        def _reply(self, code: int, body: bytes = b"", headers=()) -> None:
            if getattr(self, "_req", None) is not None:
                self._req.status, self._req = code, None
            self.send_response(code)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        @staticmethod
        def _meta(obj) -> list:
            return [("ETag", _etag(obj[0])), ("Last-Modified", email.utils.formatdate(obj[1], usegmt=True))]

        # -- verbs --------------------------------------------------------------
        def do_PUT(self) -> None:
            req = self._parse()
            body = self._body(req)
            if "partNumber" in req.query:
                with s3._lock:
                    s3._uploads.setdefault(req.query["uploadId"], {})[int(req.query["partNumber"])] = body
                return self._reply(200, headers=[("ETag", _etag(body))])
            with s3._lock:
                if req.headers.get("if-none-match") == "*" and (req.bucket, req.key) in s3.objects:
                    return self._reply(412, b"<Error><Code>PreconditionFailed</Code></Error>")
                s3.objects[(req.bucket, req.key)] = (body, time.time())
            self._reply(200, headers=[("ETag", _etag(body))])

        def do_POST(self) -> None:
            req = self._parse()
            self._body(req)
            if "uploads" in req.query:
                upload = uuid.uuid4().hex
                return self._reply(
                    200,
                    (
                        f"<InitiateMultipartUploadResult><Bucket>{req.bucket}</Bucket>"
                        f"<Key>{escape(req.key)}</Key><UploadId>{upload}</UploadId>"
                        "</InitiateMultipartUploadResult>"
                    ).encode(),
                )
            with s3._lock:
                parts = s3._uploads.pop(req.query["uploadId"], {})
                data = b"".join(parts[n] for n in sorted(parts))
                s3.objects[(req.bucket, req.key)] = (data, time.time())
            self._reply(
                200,
                (
                    f"<CompleteMultipartUploadResult><Bucket>{req.bucket}</Bucket><Key>{escape(req.key)}"
                    f"</Key><ETag>{escape(_etag(data))}</ETag></CompleteMultipartUploadResult>"
                ).encode(),
            )

        def do_GET(self) -> None:
            if self.path == "/_fake/state":
                body = json.dumps(
                    {"requests": [asdict(r) for r in s3.requests], "objects": sorted(s3.objects)}
                ).encode()
                return self._reply(200, body, [("Content-Type", "application/json")])
            req = self._parse()
            if not req.key and "list-type" in req.query:
                return self._list(req)
            obj = s3.objects.get((req.bucket, req.key))
            if obj is None:
                return self._reply(404, b"<Error><Code>NoSuchKey</Code></Error>")
            body, rng = obj[0], req.headers.get("range")
            if rng:
                first, last = rng.split("=", 1)[1].split("-")
                first, last = int(first), (int(last) if last else len(body) - 1)
                return self._reply(
                    206,
                    body[first : last + 1],
                    self._meta(obj) + [("Content-Range", f"bytes {first}-{last}/{len(body)}")],
                )
            self._reply(200, body, self._meta(obj))

        def do_HEAD(self) -> None:
            req = self._parse()
            obj = s3.objects.get((req.bucket, req.key))
            if not req.key:
                return self._reply(200)  # the bucket exists
            if obj is None:
                return self._reply(404)
            self.send_response(200)
            for name, value in self._meta(obj):
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(obj[0])))
            self.end_headers()

        def do_DELETE(self) -> None:
            req = self._parse()
            with s3._lock:
                if "uploadId" in req.query:
                    s3._uploads.pop(req.query["uploadId"], None)
                else:
                    s3.objects.pop((req.bucket, req.key), None)
            self._reply(204)

        def _list(self, req: Request) -> None:
            prefix, delimiter = req.query.get("prefix", ""), req.query.get("delimiter")
            after = req.query.get("start-after", "")
            contents, prefixes = [], set()
            for (bucket, key), obj in sorted(s3.objects.items()):
                if bucket != req.bucket or not key.startswith(prefix) or key <= after:
                    continue
                rest = key[len(prefix) :]
                if delimiter and delimiter in rest:
                    prefixes.add(prefix + rest.split(delimiter)[0] + delimiter)
                    continue
                modified = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(obj[1]))
                contents.append(
                    f"<Contents><Key>{escape(key)}</Key><LastModified>{modified}</LastModified>"
                    f"<ETag>{escape(_etag(obj[0]))}</ETag><Size>{len(obj[0])}</Size>"
                    "<StorageClass>STANDARD</StorageClass></Contents>"
                )
            xml = (
                f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>{req.bucket}</Name>'
                f"<Prefix>{escape(prefix)}</Prefix><KeyCount>{len(contents)}</KeyCount>"
                "<IsTruncated>false</IsTruncated>"
                + "".join(contents)
                + "".join(f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in sorted(prefixes))
                + "</ListBucketResult>"
            )
            self._reply(200, xml.encode(), [("Content-Type", "application/xml")])

    return Handler


if __name__ == "__main__":
    serve()
