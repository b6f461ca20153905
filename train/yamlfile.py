"""YAML files of the workstation (runs, manifests): read, and written atomically."""

from __future__ import annotations

from pathlib import Path

import yaml

from edge.core.files import write_text_atomic


def read_yaml(path: str | Path):
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def write_yaml_atomic(path: str | Path, data) -> None:
    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))
