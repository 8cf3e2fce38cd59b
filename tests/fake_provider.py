"""What the fake third-party providers on loopback share: the port they keep across
``stop()``/``start()``, the connection counters and the HTTP version.

``keep_alive=True`` answers HTTP/1.1 and keeps each connection open for further requests,
as real providers do; by default each connection closes after its answer, so that after
``stop()`` no open connection answers either. ``connections_opened`` and
``connections_closed`` count the TCP connections.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeProvider:
    def __init__(self, keep_alive: bool = False) -> None:
        self.keep_alive = keep_alive
        self.connections_opened = 0
        self.connections_closed = 0
        self.port = 0
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def handler_base(self) -> type[BaseHTTPRequestHandler]:
        """A request handler base that counts this provider's connections and logs nothing;
        the fake's own handler subclasses it with its ``do_GET``/``do_POST``."""
        fake = self

        class CountingHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if fake.keep_alive else "HTTP/1.0"

            def setup(self) -> None:
                super().setup()
                fake.connections_opened += 1

            def finish(self) -> None:
                super().finish()
                fake.connections_closed += 1

            def log_message(self, *args) -> None:  # keep test output clean
                pass

        return CountingHandler

    def serve(self, handler: type[BaseHTTPRequestHandler], poll_interval: float = 0.5) -> None:
        """Listens on ``port`` (a free one the first time) with ``handler``."""
        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.port = self._server.server_address[1]
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": poll_interval}, daemon=True
        ).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
