"""The Supervisor's API as an add-on sees it, on loopback, for the add-on's tests (its start and its image)."""

from __future__ import annotations

import json

from loopback_http import LoopbackServer


class FakeSupervisor(LoopbackServer):
    """The Supervisor's API as an add-on sees it, on loopback: GET /services/mqtt and /info with a token."""

    TOKEN = "0123456789abcdef0123456789abcdef"

    def __init__(self, mqtt: dict | None, hostname: str = "homeassistant") -> None:
        self.requests: list[str] = []
        self.mqtt, self.hostname = mqtt, hostname
        super().__init__(self._answer)

    def _answer(self, request) -> tuple[int, str, bytes]:
        code, body = self._reply(request)
        return code, "application/json", json.dumps(body).encode()

    def _reply(self, request) -> tuple[int, dict]:
        self.requests.append(request.path)
        if request.headers.get("Authorization") != f"Bearer {self.TOKEN}":
            return 401, {"result": "error", "message": "Unauthorized"}
        if request.path == "/services/mqtt":
            if self.mqtt is None:
                return 400, {"result": "error", "message": "Service not enabled"}
            return 200, {"result": "ok", "data": self.mqtt}
        if request.path == "/info":
            return 200, {"result": "ok", "data": {"hostname": self.hostname, "arch": "aarch64"}}
        return 404, {"result": "error", "message": "not found"}


MOSQUITTO = {"host": "core-mosquitto", "port": 1883, "ssl": False, "protocol": "3.1.1", "username": "addons",
             "password": "Eeph7iex", "addon": "core_mosquitto"}
