"""systemd's notify protocol (Type=notify, WatchdogSec=) over the standard library's socket.

Under systemd, NOTIFY_SOCKET names a datagram socket: the monitor says READY=1 once it runs, and
WATCHDOG=1 from its hop sink, so pings flow while its loop gives a line every hop: a decision,
or why it decided nothing (no signal; no audio while it reopens a lost input itself). A hung
monitor misses its pings and systemd restarts it. Outside systemd every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time

from edge.engine.hop import HopLine

log = logging.getLogger("humwatch.systemd")


class SystemdNotifier:
    """A hop sink that pings the watchdog at half its interval; ready() and close() bracket the run."""

    def __init__(self, environ=os.environ, clock=time.monotonic) -> None:
        address = environ.get("NOTIFY_SOCKET")
        self.address = "\0" + address[1:] if address and address.startswith("@") else address  # '@': abstract
        usec = environ.get("WATCHDOG_USEC")
        for_us = environ.get("WATCHDOG_PID") in (None, str(os.getpid()))
        self.interval_sec = int(usec) / 1e6 if usec and usec.isdigit() and for_us else None
        self.clock = clock
        self._last_ping = float("-inf")
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if self.address else None

    def notify(self, *fields: str) -> None:
        if self._socket is None:
            return
        try:
            self._socket.sendto("\n".join(fields).encode(), self.address)
        except OSError as error:  # systemd gone or socket unreachable: never fatal for the monitor
            log.warning("systemd notify failed: %s", error)

    def ready(self) -> None:
        if self.interval_sec:
            log.info("systemd watchdog: pinging every %.1f s while hops are decided", self.interval_sec / 2)
        self.notify("READY=1", "STATUS=listening")

    def __call__(self, line: HopLine) -> None:
        if self.interval_sec and self.clock() - self._last_ping >= self.interval_sec / 2:
            self.notify("WATCHDOG=1", f"STATUS={line.debounced_status} at t={line.t:.1f} s")
            self._last_ping = self.clock()

    def close(self) -> None:
        self.notify("STOPPING=1")
        if self._socket is not None:
            self._socket.close()
