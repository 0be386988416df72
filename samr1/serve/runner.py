"""Run the app with uvicorn in a background thread (tests, benchmarks, notebooks) or in the foreground."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from samr1.hosts import is_loopback  # re-exported: its home is the light samr1.hosts (samr1 view imports it)

__all__ = ["ServerThread", "is_loopback", "uvicorn_options"]


def uvicorn_options(app: Any) -> dict[str, Any]:
    """The uvicorn settings every samr1 server runs with (``uvicorn.Config(app, **uvicorn_options(app))``): the
    HTTP protocol with the request-head deadline of the app's ``ServerConfig.header_timeout_s``
    (:mod:`samr1.serve.timeouts`) and no lifespan events (the service is built before the server starts)."""
    from samr1.serve.app import ServerConfig
    from samr1.serve.timeouts import http_protocol

    service = getattr(getattr(app, "state", None), "service", None)
    cfg = service.config if service is not None else ServerConfig()
    return {"http": http_protocol(cfg.header_timeout_s), "lifespan": "off"}


class ServerThread:
    """uvicorn serving ``app`` on ``host:port`` in a daemon thread; ``port=0`` picks a free port.

    Use as a context manager (``with ServerThread(app) as srv: srv.url``) or call :meth:`start` /
    :meth:`stop`. :meth:`stop` also closes the app's service (its worker thread), when it has one.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                 start_timeout_s: float = 30.0):
        self.app = app
        self.host = host
        self.port = int(port)
        self.log_level = log_level
        self.start_timeout_s = float(start_timeout_s)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> ServerThread:
        import uvicorn

        # bind here, not in uvicorn: the port is known (and reserved) before the thread starts
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(fam, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(1024)
        self._sock = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level=self.log_level, backlog=1024, access_log=False,
                                **uvicorn_options(self.app))
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="samr1-uvicorn", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start on {self.url} within {self.start_timeout_s} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        service = getattr(getattr(self.app, "state", None), "service", None)
        if service is not None:
            service.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
