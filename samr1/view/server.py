"""The rollout viewer's HTTP server (``samr1 view RUN_DIR``): the standard library's threading HTTP server.

Routes (GET only):

- ``/``: the viewer page; ``/static/<name>``: its script and stylesheet (:func:`samr1.view.static_file`);
- ``/api/runs``: ``{"root": path, "runs": [run ids]}`` (a run id is the run folder relative to the root);
- ``/api/curves?run=ID``: metrics.jsonl and learn.jsonl rows (:meth:`samr1.view.run.RunFolder.curves`);
- ``/api/steps?run=ID``: the logged steps (:meth:`~samr1.view.run.RunFolder.steps`);
- ``/api/groups?run=ID&step=N``: the groups of one step;
- ``/image?run=ID&key=HEX``: one logged image (JPEG).

Every file read is named by a run id from the list found under the root and a hex key checked against
:data:`samr1.view.run.IMAGE_KEY`: no part of a request path reaches the file system. Bad requests get 4xx with
``{"error": message}``. The run list is found again on each ``/api/runs`` (a run started later appears).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from samr1.view import static_file
from samr1.view.run import RunFolder, find_runs

__all__ = ["ViewerApp", "ViewServer"]


class _BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class ViewerApp:
    """What the viewer serves, without HTTP: the root folder and one :class:`RunFolder` per run found."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"{root}: not a folder (give the --output-dir of a samr1 train run)")
        self._runs: dict[str, RunFolder] = {}
        self._lock = threading.Lock()
        self.refresh()

    def refresh(self) -> list[str]:
        found = find_runs(self.root)
        with self._lock:
            for rid in found:
                if rid not in self._runs:
                    self._runs[rid] = RunFolder(os.path.join(self.root, rid))
        return found

    def run(self, rid: str | None) -> RunFolder:
        with self._lock:
            folder = self._runs.get(rid or ".")
        if folder is None:
            self.refresh()  # a run that appeared since the page loaded
            with self._lock:
                folder = self._runs.get(rid or ".")
        if folder is None:
            raise _BadRequest(404, f"run={rid!r}: no such run under {self.root}")
        return folder

    def handle(self, path: str, query: dict[str, list[str]]) -> tuple[int, bytes, str]:
        """(status, body, content type) of a GET request."""
        def arg(name: str) -> str | None:
            vals = query.get(name)
            return vals[0] if vals else None

        if path in ("/", "/index.html"):
            body, ctype = static_file("viewer.html")
            return 200, body, ctype
        if path.startswith("/static/"):
            got = static_file(path[len("/static/"):])
            if got is None:
                raise _BadRequest(404, f"{path}: no such page file")
            return 200, got[0], got[1]
        if path == "/api/runs":
            return _json({"root": self.root, "runs": self.refresh()})
        if path == "/api/curves":
            return _json(self.run(arg("run")).curves())
        if path == "/api/steps":
            return _json(self.run(arg("run")).steps())
        if path == "/api/groups":
            raw = arg("step")
            try:
                step = int(raw) if raw is not None else None
            except ValueError:
                step = None
            if step is None:
                raise _BadRequest(400, f"step={raw!r}: expected an integer step number")
            return _json({"step": step, "groups": self.run(arg("run")).groups(step)})
        if path == "/image":
            key = arg("key") or ""
            file = self.run(arg("run")).image_path(key)
            if file is None:
                raise _BadRequest(404, f"key={key!r}: no such logged image")
            with open(file, "rb") as f:
                return 200, f.read(), "image/jpeg"
        raise _BadRequest(404, f"{path}: not found")


def _json(obj: Any) -> tuple[int, bytes, str]:
    return 200, json.dumps(obj, separators=(",", ":"), allow_nan=False, default=str).encode(), \
        "application/json; charset=utf-8"


def _handler(app: ViewerApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "samr1-view"

        def do_GET(self) -> None:  # noqa: N802 - the standard library's name
            u = urllib.parse.urlsplit(self.path)
            try:
                status, body, ctype = app.handle(u.path, urllib.parse.parse_qs(u.query))
            except _BadRequest as exc:
                status, body, ctype = exc.status, json.dumps({"error": str(exc)}).encode(), "application/json"
            except ValueError as exc:  # e.g. a NaN in a metrics row that JSON cannot carry
                status, body, ctype = 500, json.dumps({"error": f"cannot serve {u.path}: {exc}"}).encode(), \
                    "application/json"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the standard library's signature
            pass  # quiet: the command prints its URL once; requests are not news

    return Handler


class ViewServer:
    """The viewer on ``host:port`` in a daemon thread (``port=0`` picks a free one); a context manager.

    ``url`` is where it listens once started; :meth:`serve_forever` runs it in the calling thread instead.
    """

    def __init__(self, root: str, host: str = "127.0.0.1", port: int = 0):
        self.app = ViewerApp(root)
        server_class = ThreadingHTTPServer
        if ":" in host:
            server_class = type("ThreadingHTTPServer6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
        self.httpd = server_class((host, port), _handler(self.app))
        self.httpd.daemon_threads = True
        self.host = host
        self.port = self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.5)

    def start(self) -> ViewServer:
        self._thread = threading.Thread(target=self.serve_forever, name="samr1-view", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> ViewServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
