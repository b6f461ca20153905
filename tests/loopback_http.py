"""A small HTTP server on loopback for tests that play someone else's server (a /healthz, the
Supervisor's API, another web site): each GET is answered by a function of the request."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# request -> (status code, Content-Type or None for none, body)
Answer = Callable[[BaseHTTPRequestHandler], tuple[int, str | None, bytes]]


def post(port: int, path: str, data: bytes, headers: dict, timeout: float = 30) -> tuple[int, dict]:
    """POST to a monitor's page on loopback: its status code and JSON answer, errors included."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


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
