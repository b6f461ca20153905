"""`humwatch pull`: a monitor's new recordings and relabelled clips into the workstation's samples
folder, one subfolder per monitor (``samples/<monitor>/``).

Only what is new is fetched: a file already there with the same sha256 is skipped; one there with
other content is never overwritten (it is reported, and the pull ends non-zero). A download goes to
``.<name>.partial`` first and resumes from its end next time (a Range request); it takes its name
only once its sha256 matches the monitor's. The monitor is then told what was pulled, so its page
shows only what is not yet here.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
from pathlib import Path

from edge.core.files import sha256_file
from edge.home.client import MonitorClient


@dataclasses.dataclass
class Pulled:
    """What one pull did: files fetched (name -> labels), already here, refused (name -> why)."""

    folder: Path
    fetched: dict[str, dict[str, bool]] = dataclasses.field(default_factory=dict)
    present: list[str] = dataclasses.field(default_factory=list)
    refused: dict[str, str] = dataclasses.field(default_factory=dict)

    def per_label(self) -> dict[str, int]:
        """Fetched files per appliance and state: {"fridge on": 2, "ac off": 3, ...}."""
        counts: collections.Counter = collections.Counter()
        for labels in self.fetched.values():
            counts.update(f"{name} {'on' if on else 'off'}" for name, on in labels.items())
        return dict(sorted(counts.items()))


def monitors(root: MonitorClient) -> list[dict]:
    """The monitors of the process at `root`: [{"id": id or None (the only one), "name"}]."""
    return root.get_json("api/monitors", root=True)


def folder_name(monitor: dict, client: MonitorClient) -> str:
    """The subfolder of samples/ a monitor's files go to: its id, or the host of the only one."""
    host = client.root.split("://", 1)[1].rstrip("/").rsplit(":", 1)[0]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", monitor["id"] or host)


def pull(client: MonitorClient, folder: Path) -> Pulled:
    """Fetch what the monitor at `client` holds and `folder` lacks (see the module's docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    result, checked = Pulled(folder), {}
    for row in client.get_json("api/samples")["samples"]:
        name, digest = row["name"], row["sha256"]
        if Path(name).name != name or name.startswith("."):
            result.refused[name] = "not a plain file name; the monitor is not one humwatch serves"
            continue
        target = folder / name
        if target.exists():
            if sha256_file(target) == digest:
                result.present.append(name)
                checked[name] = digest
            else:
                result.refused[name] = f"{target} holds other content; it is never overwritten (move it away to pull)"
            continue
        partial = folder / f".{name}.partial"
        client.download(f"samples/{name}", partial, partial.stat().st_size if partial.exists() else 0)
        if sha256_file(partial) != digest:
            partial.unlink()
            result.refused[name] = "its checksum did not match the monitor's (changed while pulled?); pull again"
            continue
        os.replace(partial, target)
        result.fetched[name] = row["labels"]
        checked[name] = digest
    if checked:
        client.post_json("api/samples/pulled", {"pulled": checked})
    return result
