"""A small threaded HTTP server whose replies a test can script, plus a media host."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import av
import numpy as np


def make_mp4(frames: int = 6, width: int = 64, height: int = 48, faststart: bool = False) -> bytes:
    """A real, tiny H.264 MP4 whose frames have distinct grey levels (`faststart`: its index first, as CDNs serve)."""
    with tempfile.TemporaryDirectory() as folder:  # faststart moves the index by re-reading a real file
        path = os.path.join(folder, "v.mp4")
        with av.open(path, "w", format="mp4", options={"movflags": "faststart"} if faststart else {}) as container:
            stream = container.add_stream("libx264", rate=24)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for i in range(frames):
                image = np.full((height, width, 3), 30 + (i * 30) % 200, np.uint8)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode())
        with open(path, "rb") as handle:
            return handle.read()


HOLD_S = 120.0  # the longest a held answer waits for its test (which has failed by then)


@dataclass
class Reply:
    status: int = 200
    json: object = None
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    drop: bool = False  # close the connection without answering (the request did arrive)
    drip_s: float = 0.0  # pause between body chunks of `chunk` bytes (a slow or stalled transfer)
    chunk: int = 1024
    length: bool = True  # send Content-Length; without it the body ends when the connection closes
    hold: threading.Event | None = None  # send the first chunk, the rest once this is set (bounded: HOLD_S)


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict
    body: bytes


class FakeServer:
    """Subclasses implement `route(seen) -> Reply`. Every request is recorded in `self.seen`."""

    def __init__(self):
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                seen = Seen(self.command, parts.path, parts.query, {k.lower(): v for k, v in self.headers.items()}, body)
                with owner.lock:
                    owner.seen.append(seen)
                reply = owner.route(seen)
                if reply.drop:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                data = json.dumps(reply.json).encode() if reply.json is not None else reply.body
                self.send_response(reply.status)
                headers = {"content-type": "application/json"} if reply.json is not None else {}
                headers.update(reply.headers)
                for name, value in headers.items():
                    self.send_header(name, value)
                if reply.length:
                    self.send_header("content-length", str(len(data)))
                else:
                    self.send_header("connection", "close")
                    self.close_connection = True
                self.end_headers()
                self._body(data, reply)

            def _body(self, data: bytes, reply: Reply):
                """Write the body, dripping or holding it when asked; records how many bytes the client took."""
                step = reply.chunk if reply.drip_s or reply.hold is not None else len(data) or 1
                sent = 0
                try:
                    for start in range(0, len(data), step):
                        self.wfile.write(data[start:start + step])
                        self.wfile.flush()
                        sent += len(data[start:start + step])
                        if reply.hold is not None and start == 0:
                            reply.hold.wait(HOLD_S)
                        if reply.drip_s and sent < len(data):
                            time.sleep(reply.drip_s)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                with owner.lock:
                    owner.sent.append((sent, len(data)))

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, *args):
                owner.log_lines.append(args[0] % args[1:] if len(args) > 1 else str(args[0]))

        self.lock = threading.Lock()
        self.seen: list[Seen] = []
        self.sent: list[tuple[int, int]] = []  # (bytes written, body size) per answer
        self.log_lines: list[str] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def route(self, seen: Seen) -> Reply:
        raise NotImplementedError

    def requests(self, method: str, contains: str = "") -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.method == method and contains in s.path]


class MediaServer(FakeServer):
    """Serves videos under /media/<name>; `expired` names answer 404. Scripted faults: `truncate` serves
    the first N downloads cut to a fraction, `style` shapes every answer (drip, no length),
    `redirect` sends /media/<name> to another URL."""

    def __init__(self, video: bytes):
        super().__init__()
        self.video = video
        self.expired: set[str] = set()
        self.bodies: dict[str, bytes] = {}
        self.truncate: list[float] = []   # fractions of the body served by the next downloads
        self.style: dict = {}             # extra Reply fields, e.g. {"drip_s": 0.05} or {"length": False}
        self.redirect: str | None = None

    def add(self, name: str, body: bytes | None = None) -> str:
        self.bodies[name] = self.video if body is None else body
        return f"{self.url}/media/{name}"

    def route(self, seen: Seen) -> Reply:
        name = seen.path.rsplit("/", 1)[-1]
        if self.redirect:
            return Reply(302, headers={"location": self.redirect})
        if name in self.expired or name not in self.bodies:
            return Reply(404, json={"detail": "Not Found"})
        body = self.bodies[name]
        if self.truncate:
            body = body[:int(len(body) * self.truncate.pop(0))]
        return Reply(200, body=body, headers={"content-type": "video/mp4"}, **self.style)


def check_auth(seen: Seen, header: str, expected: str) -> Reply | None:
    """A 401 reply when the auth header is not exactly what the provider expects."""
    if seen.headers.get(header) != expected:
        return Reply(401, json={"detail": "Invalid API key", "message": "Unauthorized"})
    return None


class ProviderFake(FakeServer):
    """State every provider fake shares: its jobs, the key it accepts, and the scripted failures a test sets."""

    def __init__(self, media: "MediaServer", key: str, *, queue_polls: int = 1, run_polls: int = 1):
        super().__init__()
        self.media, self.key = media, key
        self.queue_polls, self.run_polls = queue_polls, run_polls
        self.jobs: dict[str, dict] = {}
        self.submit_replies: list[Reply] = []  # scripted answers to the next submits (no job created)
        self.drop_after_submit = False           # create the job, then drop the connection
        self.status_glitches: list = []          # transient answers given before the real status
        self.fail_with: str | None = None
        self.expired = False
