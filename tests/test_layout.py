"""The house rules of the layout, checked on the source: the method in ``ei2`` imports no ComfyUI and starts no
process, imports run one way (node classes → ``nodes/adapter`` → ``ei2``), and no module outgrows 400 lines."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLING = ROOT / "ei2" / "cli"
CORE = sorted(p for p in (ROOT / "ei2").rglob("*.py") if TOOLING not in p.parents and p.name != "__main__.py")
ADAPTER = sorted((ROOT / "nodes" / "adapter").glob("*.py"))
SOURCE = sorted([*(ROOT / "ei2").rglob("*.py"), *(ROOT / "nodes").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")])
# What the method may not reach for: ComfyUI's modules, and processes, sockets or threads.
NOT_IN_CORE = ("comfy", "comfy_extras", "folder_paths", "nodes", "server", "latent_preview", "execution",
               "subprocess", "multiprocessing", "socket", "threading", "urllib", "http")


def imports(path: Path) -> list[tuple[int, str]]:
    """``(relative level, module)`` of every import in ``path``, function-level imports included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(0, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or ""))
    return found


def name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_layout_checks_see_the_modules_they_are_about():
    assert {p.stem for p in CORE} >= {"ffam", "stam", "temporal", "spectral", "ddim", "tuning"}
    assert {p.stem for p in ADAPTER} >= {"patching", "training", "tuned_state", "sampling"}


@pytest.mark.parametrize("path", CORE, ids=name)
def test_the_core_imports_no_comfyui_and_starts_no_process(path):
    for level, module in imports(path):
        top = module.split(".")[0]
        assert level > 0 or top not in NOT_IN_CORE, f"{name(path)} imports {module}"
        # Relative imports stay inside the method (never the tooling in ei2/cli, never the node package).
        assert level <= 1 and top != "cli", f"{name(path)} imports {'.' * level}{module}"


@pytest.mark.parametrize("path", ADAPTER, ids=name)
def test_the_glue_never_imports_the_node_classes(path):
    for level, module in imports(path):
        # From nodes/adapter: level 1 is the glue itself, level 3 the ei2 package; level 2 would be nodes/.
        assert level != 2, f"{name(path)} imports {'.' * level}{module}"
        assert level != 3 or module.split(".")[0] == "ei2", f"{name(path)} imports {'.' * level}{module}"


@pytest.mark.parametrize("path", SOURCE, ids=name)
def test_no_module_is_over_400_lines(path):
    assert len(path.read_text().splitlines()) <= 400
