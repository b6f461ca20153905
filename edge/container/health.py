"""The image's HEALTHCHECK: ask /healthz of the monitor that the settings file describes.

    python3 -m edge.container.health [CONFIG]     (default: $HUMWATCH_CONFIG or /data/humwatch.toml)

The address is the file's [http] listen (PORT or HOST:PORT; a wildcard host is asked on loopback).
Exit 0 when /healthz answers 200; 1 when it answers 503 (degraded), nothing answers, or the file
has no [http] listen; the answer or the reason is printed for `docker inspect` / `podman healthcheck run`.
"""

from __future__ import annotations

import os
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

from edge.home.http_status import parse_listen

DEFAULT_CONFIG = "/data/humwatch.toml"
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}


def healthz_url(config: Path) -> str:
    """The /healthz URL of the [http] listen address in the settings file (ValueError: none there)."""
    try:
        http = tomllib.loads(config.read_text(encoding="utf-8")).get("http")
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{config}: cannot read the settings ({error})") from error
    listen = http.get("listen") if isinstance(http, dict) else http  # [http] listen, or http as files held before
    if not isinstance(listen, str):
        raise ValueError(f"{config}: no [http] listen = \"[HOST:]PORT\" in it, so there is no /healthz to ask")
    host, port = parse_listen(listen)
    host = WILDCARDS.get(host, host).strip("[]")
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/healthz"


def check(config: Path, timeout: float = 5.0) -> tuple[bool, str]:
    """(healthy, what /healthz said or why it could not be asked)."""
    try:
        url = healthz_url(config)
    except ValueError as error:
        return False, str(error)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status == 200, answer.read(2000).decode("utf-8", "replace").strip()
    except urllib.error.HTTPError as error:
        return False, f"{error.code}: {error.read(2000).decode('utf-8', 'replace').strip()}"
    except (urllib.error.URLError, OSError) as error:
        return False, f"{url}: no answer ({getattr(error, 'reason', error)})"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    healthy, said = check(Path(args[0] if args else os.environ.get("HUMWATCH_CONFIG", DEFAULT_CONFIG)))
    print(said)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
