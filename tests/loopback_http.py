"""A small HTTP server on loopback for tests that play someone else's server (a /healthz, the
Supervisor's API, another web site): each GET is answered by a function of the request."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# request -> (status code, Content-Type or None for none, body)
Answer = Callable[[BaseHTTPRequestHandler], tuple[int, str | None, bytes]]


class LoopbackServer:
    """Serves `answer` on 127.0.0.1 at a free port (``port``, ``url``) in a thread, quietly, until
    :meth:`close`."""

    def __init__(self, answer: Answer) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                code, content_type, body = answer(self)
                self.send_response(code)
                if content_type:
                    self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
