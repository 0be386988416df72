"""The request-head read timeout uvicorn does not have.

uvicorn closes an idle kept-alive connection (``timeout_keep_alive``) but waits forever for a request whose
head never finishes: a client that opens a connection and sends nothing, or ``POST / HTTP/1.1`` and half a
header, holds a socket and its memory for as long as it likes, token or no token (one such client per file
descriptor exhausts a server). :func:`http_protocol` is uvicorn's HTTP/1.1 protocol (h11) with one timer
per connection: the head of each request (request line and headers) must arrive within ``header_timeout_s``
of the connection opening, or of the first byte after the previous response; otherwise the server answers
``408`` and closes the connection, with one log line. The body's own deadline is the app's
(``ServerConfig.body_timeout_s``, :mod:`samr1.serve.app`), because only the app knows when it reads one.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["http_protocol"]

_log = logging.getLogger("samr1.serve")


def http_protocol(header_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol class with a request-head deadline of ``header_timeout_s`` seconds (pass it as
    ``uvicorn.Config(http=...)``)."""
    if not header_timeout_s > 0:
        raise ValueError(f"header_timeout_s must be > 0 seconds, got {header_timeout_s!r}")
    body = json.dumps({"error": f"the request's headers did not arrive within {header_timeout_s:g} s"}).encode()
    reply = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
             b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    class HeadTimeoutH11Protocol(H11Protocol):
        _head_timer: Any = None

        def _waiting_for_head(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(header_timeout_s, self._head_timeout)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._waiting_for_head():
                self._arm()  # the first bytes of the next request on a kept-alive connection
            super().data_received(data)
            if not self._waiting_for_head():
                self._disarm()  # the head arrived: the app's body deadline takes over

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._waiting_for_head() and not self.transport.is_closing():
                self._arm()  # bytes of a next request may already be buffered, incomplete

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self.transport.is_closing() or not self._waiting_for_head():
                return
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
            _log.warning("samr1 serve: closed the connection of %s: no complete request head within %g s",
                         client, header_timeout_s)
            self.transport.write(reply)
            self.transport.close()

    return HeadTimeoutH11Protocol
