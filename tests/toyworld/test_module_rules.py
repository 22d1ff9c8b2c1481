"""The toy world is pure torch: no module imports diffusers (tests/test_layout.py keeps every module ≤ 400 lines)."""
import ast
from pathlib import Path

import pytest

FOLDER = Path(__file__).resolve().parents[2] / "benchmarks" / "toyworld"
MODULES = sorted(FOLDER.glob("*.py"))


def test_the_rules_see_the_modules():
    assert {"world", "scorer", "model", "blocks", "train", "gate", "edit"} <= {p.stem for p in MODULES}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_imports_no_diffusers(path):
    source = path.read_text()
    for node in ast.walk(ast.parse(source)):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        assert not any(name.split(".")[0] == "diffusers" for name in names), f"{path.name} imports diffusers"
