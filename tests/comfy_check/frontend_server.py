"""A small local stand-in for ComfyUI's web server, enough for its real frontend to start.

It serves the static files of the `comfyui-frontend-package` wheel and answers the API calls the
frontend makes while it starts and loads a workflow, with what an empty ComfyUI would answer:
`/api/object_info` (our nodes and the core ones), settings, users, extensions, user data, system
stats and so on. It never queues or runs anything. Only for tests: it binds 127.0.0.1.

The standard library is enough here (a threaded `http.server`). The frontend's one WebSocket gets
the handshake and the first "status" message a real server sends, then stays open and silent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import mimetypes
import os
import threading
import urllib.parse
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

USER_SETTINGS = {
    # What a user who has used ComfyUI before has set: no first-run tour, templates dialog or
    # update toasts that would cover the canvas, and the missing-node/model dialogs left ON.
    "Comfy.TutorialCompleted": True,
    "Comfy.Workflow.ShowMissingNodesWarning": True,
    "Comfy.Workflow.ShowMissingModelsWarning": True,
    "Comfy.Validation.Workflows": True,
    "Comfy.NodeBadge.NodeSourceBadgeMode": "None",
    "Comfy.Toast.DisableReconnectingToast": True,
    "Comfy.Notification.ShowVersionUpdates": False,
}


# ComfyUI's model folders (`folder_paths.folder_names_and_paths`, less configs and custom_nodes):
# the frontend checks a workflow's `properties.models` directories against this list.
MODEL_FOLDERS = (
    "checkpoints", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision", "style_models",
    "embeddings", "diffusers", "vae_approx", "controlnet", "gligen", "upscale_models", "latent_upscale_models",
    "hypernetworks", "photomaker", "classifiers", "model_patches", "audio_encoders",
)


# `.ci/setup test` installs the oldest comfyui-frontend-package the pack supports (the floor in
# pyproject.toml's test extra) into .frontends/<version>/; the environment holds the newest.
FRONTENDS_DIR = Path(__file__).resolve().parents[2] / ".frontends"
PACKAGE = "comfyui_frontend_package"


def frontend_root() -> Path:
    """The `static` folder of the installed comfyui-frontend-package (ImportError if absent).

    COMFYUI_FRONTEND_ROOT points at another copy, e.g. an older release unpacked elsewhere, to
    check the workflows against the frontend a given ComfyUI pins.
    """
    if os.environ.get("COMFYUI_FRONTEND_ROOT"):
        return Path(os.environ["COMFYUI_FRONTEND_ROOT"])
    import comfyui_frontend_package

    return Path(comfyui_frontend_package.__file__).resolve().parent / "static"


def frontend_version() -> str:
    from importlib.metadata import version

    return version("comfyui-frontend-package")


def frontends() -> dict[str, Path]:
    """Version -> static folder of every frontend the workflow checks run against: the one in the
    environment (or COMFYUI_FRONTEND_ROOT alone, when set) and each release under .frontends/."""
    if os.environ.get("COMFYUI_FRONTEND_ROOT"):
        return {"COMFYUI_FRONTEND_ROOT": frontend_root()}
    found = {}
    try:
        found[frontend_version()] = frontend_root()
    except ImportError:
        pass
    for info in sorted(FRONTENDS_DIR.glob(f"*/{PACKAGE}-*.dist-info")):
        found.setdefault(info.name[len(PACKAGE) + 1:].removesuffix(".dist-info"), info.parent / PACKAGE / "static")
    return found


class _Handler(SimpleHTTPRequestHandler):
    server: "FrontendServer"

    def __init__(self, request, client_address, server):
        super().__init__(request, client_address, server, directory=str(server.static_root))

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        self.server.requests.append(f"{self.command} {self.path} -> {args[1] if len(args) > 1 else '?'}")

    # ------------------------------------------------------------------ plumbing

    def _json(self, payload, status: int = 200) -> None:
        raw = isinstance(payload, bytes)  # user data files are sent back as they were stored
        body = payload if raw else json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if raw else "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _empty(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def end_headers(self):
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def _route(self):
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        if path.startswith("/api/"):
            path = path[4:]
        return path, urllib.parse.parse_qs(url.query), url.path.startswith("/api/")

    # ------------------------------------------------------------------ GET

    def do_GET(self):  # noqa: N802 - http.server's naming
        path, query, is_api = self._route()
        answer = self.server.api_get(path, query)
        if answer is not None:
            status, payload = answer
            return self._json(payload, status) if status == 200 else self._empty(status)
        if path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            return self._websocket()
        if is_api or path in ("/ws", "/user.css"):
            return self._empty(HTTPStatus.NOT_FOUND)
        pack_file = self.server.pack_file(path)
        if pack_file is not None:
            body = pack_file.read_bytes()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/javascript")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return None
        if path == "/":
            self.path = "/index.html"
        return super().do_GET()

    def _websocket(self) -> None:
        """RFC 6455 handshake, one text frame, then hold the socket until the browser closes it."""
        guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + guid).encode("ascii")).digest()).decode("ascii")
        self.send_response(HTTPStatus.SWITCHING_PROTOCOLS)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        super().end_headers()
        status = {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "hyvs-test"}}
        payload = json.dumps(status).encode("utf-8")
        self.wfile.write(bytes([0x81, len(payload)]) if len(payload) < 126 else bytes([0x81, 126]) + len(payload).to_bytes(2, "big"))
        self.wfile.write(payload)
        self.wfile.flush()
        self.close_connection = True
        while not self.server.closing.wait(0.2):
            try:
                self.connection.settimeout(0.2)
                if self.connection.recv(4096) == b"":
                    return
            except TimeoutError:
                continue
            except OSError:
                return

    # ------------------------------------------------------------------ POST / PUT / DELETE

    def do_POST(self):  # noqa: N802
        path, _, _ = self._route()
        body = self._read_body()
        status, payload = self.server.api_post(path, body)
        return self._json(payload, status) if payload is not None else self._empty(status)

    do_PUT = do_POST

    def do_DELETE(self):  # noqa: N802
        path, _, _ = self._route()
        self.server.userdata.pop(urllib.parse.unquote(path.removeprefix("/userdata/")), None)
        return self._empty(HTTPStatus.NO_CONTENT)


class FrontendServer(ThreadingHTTPServer):
    """Serves the frontend at `url`; use as a context manager. `requests` logs every request."""

    daemon_threads = True

    def __init__(self, object_info: dict, models: dict[str, list[str]] | None = None,
                 static_root: Path | None = None, port: int = 0, web_directories: dict[str, Path] | None = None,
                 json_routes: dict | None = None):
        """`web_directories`: {pack name: its WEB_DIRECTORY}, served at /extensions/<pack name>/ as ComfyUI does;
        `json_routes`: {path: answer(JSON body) -> JSON} for POST /api/<path>, as a pack's server routes."""
        mimetypes.add_type("application/javascript", ".js")
        mimetypes.add_type("application/json", ".json")
        mimetypes.add_type("image/svg+xml", ".svg")
        self.static_root = Path(static_root) if static_root else frontend_root()
        self.object_info = object_info
        self.models = models or {}
        self.web_directories = {name: Path(folder) for name, folder in (web_directories or {}).items()}
        self.json_routes = dict(json_routes or {})
        self.settings = dict(USER_SETTINGS)
        self.userdata: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.prompts: list[dict] = []
        self.closing = threading.Event()
        super().__init__(("127.0.0.1", port), _Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def __enter__(self):
        self._thread = threading.Thread(target=self.serve_forever, name="frontend-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.closing.set()
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ------------------------------------------------------------------ answers

    def extensions(self) -> list[str]:
        root = self.static_root
        core = ["/" + p.relative_to(root).as_posix() for p in (root / "extensions").rglob("*.js")]
        packs = [f"/extensions/{name}/{p.relative_to(folder).as_posix()}"
                 for name, folder in self.web_directories.items() for p in folder.rglob("*.js")]
        return sorted(core + packs)

    def pack_file(self, path: str) -> Path | None:
        """The file of a pack's web directory behind /extensions/<pack name>/<file>, if any."""
        name, _, rest = path.removeprefix("/extensions/").partition("/")
        folder = self.web_directories.get(name) if path.startswith("/extensions/") else None
        if folder is None or not rest:
            return None
        candidate = (folder / rest).resolve()
        return candidate if candidate.is_file() and folder.resolve() in candidate.parents else None

    def api_get(self, path: str, query: dict):
        """(status, JSON) for an API path, or None to fall through to the static files."""
        if path == "/object_info":
            return 200, self.object_info
        if path.startswith("/object_info/"):
            name = urllib.parse.unquote(path.removeprefix("/object_info/"))
            return 200, {name: self.object_info[name]} if name in self.object_info else {}
        if path == "/settings":
            return 200, self.settings
        if path.startswith("/settings/"):
            return 200, self.settings.get(urllib.parse.unquote(path.removeprefix("/settings/")))
        if path == "/users":
            return 200, {"storage": "server", "migrated": True}
        if path == "/extensions":
            return 200, self.extensions()
        if path == "/system_stats":
            return 200, {
                "system": {"os": os.name, "ram_total": 0, "ram_free": 0, "comfyui_version": "0.3.64",
                           "python_version": "3", "pytorch_version": "2", "embedded_python": False,
                           "argv": ["main.py"], "required_frontend_version": "1.28.0"},
                "devices": [{"name": "cpu", "type": "cpu", "index": None, "vram_total": 0, "vram_free": 0,
                             "torch_vram_total": 0, "torch_vram_free": 0}],
            }
        if path == "/features":
            return 200, {"supports_preview_metadata": True, "max_upload_size": 100 * 1024 * 1024}
        if path == "/models":
            return 200, list(MODEL_FOLDERS)
        if path == "/experiment/models":
            return 200, [{"name": f, "folders": [f"/comfyui/models/{f}"]} for f in MODEL_FOLDERS]
        if path.startswith("/models/") or path.startswith("/experiment/models/"):
            folder = urllib.parse.unquote(path.rsplit("/", 1)[1])
            if folder not in MODEL_FOLDERS:
                return 404, None
            names = self.models.get(folder, [])
            if path.startswith("/models/"):
                return 200, names
            return 200, [{"name": n, "pathIndex": 0, "modified": 0, "size": 0} for n in names]
        if path in ("/embeddings", "/internal/logs/raw"):
            return 200, []
        if path == "/internal/folder_paths":
            return 200, {f: [f"/comfyui/models/{f}"] for f in MODEL_FOLDERS}
        if path == "/i18n":
            return 200, {}
        if path == "/workflow_templates":
            return 200, {}
        if path == "/templates/index.json" or path.startswith("/templates/index."):
            return 200, []
        if path == "/queue":
            return 200, {"queue_running": [], "queue_pending": []}
        if path == "/prompt":
            return 200, {"exec_info": {"queue_remaining": 0}}
        if path.startswith("/history") or path in ("/global_subgraphs", "/node_replacements"):
            return 200, {}
        if path == "/jobs":
            offset = int(query.get("offset", ["0"])[0])
            limit = int(query.get("limit", ["200"])[0])
            return 200, {"jobs": [], "pagination": {"total": 0, "offset": offset, "limit": limit, "has_more": False}}
        if path == "/userdata" or path == "/v2/userdata":
            prefix = query.get("dir", [""])[0].rstrip("/") + "/"
            names = [name.removeprefix(prefix) for name in self.userdata if name.startswith(prefix)]
            if path == "/v2/userdata":
                return 200, [{"name": n, "path": n, "type": "file", "size": 0, "modified": 0} for n in names]
            return 200, names
        if path.startswith("/userdata/"):
            name = urllib.parse.unquote(path.removeprefix("/userdata/"))
            if name in self.userdata:
                return 200, self.userdata[name]
            return 404, None
        if path.startswith("/internal/"):
            return 200, {}
        return None

    def api_post(self, path: str, body: bytes):
        if path in self.json_routes:
            return 200, self.json_routes[path](json.loads(body or b"{}"))
        if path == "/settings":
            self.settings.update(json.loads(body or b"{}"))
            return 200, None
        if path.startswith("/settings/"):
            self.settings[urllib.parse.unquote(path.removeprefix("/settings/"))] = json.loads(body or b"null")
            return 200, None
        if path.startswith("/userdata/"):
            name = urllib.parse.unquote(path.removeprefix("/userdata/").split("?")[0])
            self.userdata[name] = body
            return 200, {"path": name}
        if path == "/prompt":
            self.prompts.append(json.loads(body or b"{}"))
            return 200, {"prompt_id": "test", "number": len(self.prompts), "node_errors": {}}
        return 200, None
