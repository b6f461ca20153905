"""The workstation's side of a monitor's HTTP API (standard library only): `humwatch pull`,
`push`, `rollback` and `judge` talk to a running monitor through this, with its token."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO

TOKEN_HEADER = "X-Humwatch-Token"  # as edge.home.http_status reads it
TIMEOUT_SEC = 60.0


class MonitorError(RuntimeError):
    """The monitor refused or could not be reached; the message says which URL and why."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class MonitorClient:
    """One monitor's API at `url` (its page's address: http://pi.local:8321/, or /monitor/<id>/ of
    several; the bundle endpoints are the process's, at the root)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = TIMEOUT_SEC) -> None:
        parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise MonitorError(f"{url!r}: expected a monitor's address, e.g. http://pi.local:8321/")
        self.root = f"{parts.scheme}://{parts.netloc}/"
        self.url = self.root + parts.path.strip("/") + ("/" if parts.path.strip("/") else "")
        self.token, self.timeout = token, timeout

    def _request(self, path: str, data=None, content_type: str | None = None, headers: dict | None = None,
                 root: bool = False, length: int | None = None):
        request = urllib.request.Request(urllib.parse.urljoin(self.root if root else self.url, path.lstrip("/")),
                                         data=data, headers=dict(headers or {}))
        if self.token:
            request.add_header(TOKEN_HEADER, self.token)
        if content_type:
            request.add_header("Content-Type", content_type)
        if length is not None:
            request.add_header("Content-Length", str(length))
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            raise MonitorError(f"{request.full_url}: {error.code}: {_reason(error)}", error.code) from None
        except (urllib.error.URLError, OSError) as error:
            raise MonitorError(f"{request.full_url}: cannot reach the monitor ({getattr(error, 'reason', error)})") from None

    def get_json(self, path: str, root: bool = False):
        with self._request(path, root=root) as response:
            return json.loads(response.read())

    def post_json(self, path: str, body: dict, root: bool = False):
        with self._request(path, json.dumps(body).encode(), "application/json", root=root) as response:
            return json.loads(response.read())

    def post_file(self, path: str, file: BinaryIO, size: int, content_type: str, root: bool = False):
        with self._request(path, file, content_type, root=root, length=size) as response:
            return json.loads(response.read())

    def download(self, path: str, target: Path, offset: int = 0, root: bool = False) -> None:
        """GET path into `target`, appending from byte `offset` (a Range request) when it is above 0."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        with self._request(path, headers=headers, root=root) as response, open(target, "ab" if offset else "wb") as out:
            if offset and response.status != 206:  # the server sent it all: start again
                out.seek(0)
                out.truncate()
            while block := response.read(1 << 20):
                out.write(block)


def _reason(error: urllib.error.HTTPError) -> str:
    body = error.read()
    try:
        return json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return body[:200].decode(errors="replace") or error.reason
