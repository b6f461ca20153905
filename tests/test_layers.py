"""Imports point one way: export above train above edge. The Pi installs edge alone (no torch), and
a rule lives in the lowest layer that needs it."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("edge", "train", "export")  # each may import only those before it
FORBIDDEN = {"edge": {"train", "export", "torch"}, "train": {"export"}, "export": set()}


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every absolute import in a module, those inside functions included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_imports_point_one_way():
    modules = {layer: sorted((REPO / layer).rglob("*.py")) for layer in LAYERS}
    wrong = [f"{path.relative_to(REPO)} imports {name}"
             for layer, paths in modules.items() for path in paths
             for name in sorted(imported_packages(path) & FORBIDDEN[layer])]
    assert not wrong, "imports against the layers: " + "; ".join(wrong)
    # the check sees imports: export uses train and edge, train uses edge
    assert any("train" in imported_packages(path) for path in modules["export"])
    assert any("edge" in imported_packages(path) for path in modules["train"])


def test_the_check_finds_an_import_inside_a_function(tmp_path):
    module = tmp_path / "late.py"
    module.write_text("import os\n\ndef later():\n    from export.exporter import export_run\n    import train.run as run\n")
    assert imported_packages(module) == {"os", "export", "train"}
