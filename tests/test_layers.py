"""Imports point one way. Between the packages: export above train above edge (the Pi installs edge
alone, no torch). Inside edge, between its rooms: core (pure rules) < engine (a bundle's model
deciding audio) < home (the sinks: history, MQTT, HTTP, clips) and cluster (batch on Ray) < monitor
(sources, settings, assembly, live) < container and commands < cli. A rule lives in the lowest room
that needs it, and no room imports one above it (so no two import each other)."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("edge", "train", "export")  # each may import only those before it
FORBIDDEN = {"edge": {"train", "export", "torch"}, "train": {"export"}, "export": set()}
ROOMS = {"core": 0, "engine": 1, "home": 2, "cluster": 2, "monitor": 3, "container": 4, "commands": 4, "cli": 5}


def imported_modules(path: Path) -> set[str]:
    """Every absolute import in a module, dotted (`from a.b import c` counts as a.b), those inside functions included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names


def imported_packages(path: Path) -> set[str]:
    """The top-level names of :func:`imported_modules`."""
    return {name.split(".")[0] for name in imported_modules(path)}


def room(module: str) -> str | None:
    """edge.engine.detector -> 'engine'; edge.cli -> 'cli'; edge itself -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "edge" else None


def arrows_up(root: Path) -> list[str]:
    """Imports from an edge room into one at its rank or above (another room), as 'from -> to' lines."""
    wrong = []
    for path in sorted((root / "edge").rglob("*.py")):
        here = room(".".join(path.relative_to(root).with_suffix("").parts))
        for module in sorted(imported_modules(path)):
            there = room(module)
            if here in ROOMS and there in ROOMS and there != here and ROOMS[there] >= ROOMS[here]:
                wrong.append(f"{path.relative_to(root)} ({here}) imports {module} ({there})")
    return wrong


def test_imports_point_one_way():
    modules = {layer: sorted((REPO / layer).rglob("*.py")) for layer in LAYERS}
    wrong = [f"{path.relative_to(REPO)} imports {name}"
             for layer, paths in modules.items() for path in paths
             for name in sorted(imported_packages(path) & FORBIDDEN[layer])]
    assert not wrong, "imports against the layers: " + "; ".join(wrong)
    # the check sees imports: export uses train and edge, train uses edge
    assert any("train" in imported_packages(path) for path in modules["export"])
    assert any("edge" in imported_packages(path) for path in modules["train"])


def test_edge_rooms_import_only_rooms_below_them():
    assert not arrows_up(REPO), "imports against edge's rooms: " + "; ".join(arrows_up(REPO))
    rooms = {path.relative_to(REPO / "edge").parts[0].removesuffix(".py") for path in (REPO / "edge").iterdir()
             if path.suffix == ".py" or (path / "__init__.py").exists()} - {"__init__"}
    assert rooms == set(ROOMS), f"every room of edge has its rank: {rooms ^ set(ROOMS)}"


def test_the_check_finds_an_arrow_up(tmp_path):
    (tmp_path / "edge" / "engine").mkdir(parents=True)
    (tmp_path / "edge" / "home").mkdir()
    (tmp_path / "edge" / "engine" / "hop.py").write_text("from edge.core.decision import StreamUpdate\n")
    (tmp_path / "edge" / "engine" / "late.py").write_text("def later():\n    from edge.home.mqtt import title\n")
    (tmp_path / "edge" / "home" / "page.py").write_text("import edge.engine.hop\nfrom edge.monitor.live import FanOut\n")
    assert arrows_up(tmp_path) == ["edge/engine/late.py (engine) imports edge.home.mqtt (home)",
                                   "edge/home/page.py (home) imports edge.monitor.live (monitor)"]


def test_the_check_finds_an_import_inside_a_function(tmp_path):
    module = tmp_path / "late.py"
    module.write_text("import os\n\ndef later():\n    from export.exporter import export_run\n    import train.run as run\n")
    assert imported_packages(module) == {"os", "export", "train"}
