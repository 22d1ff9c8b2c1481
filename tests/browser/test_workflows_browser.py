"""The ComfyUI frontend, in headless Chromium, loads every bundled workflow as a drag-and-drop does.

Chromium comes from Debian (``apt-get install chromium``; ``.ci/test.sh`` does it), driven by Playwright.
Screenshots are kept in ``test-artifacts/browser/``. The same checks hold for ComfyUI 0.3.75's frontend
and newer ones, which add widgets (with their defaults) and flag values the server does not have.
"""
from __future__ import annotations

import json
import os

import pytest
from playwright.sync_api import sync_playwright

from ei2.cli.runner import PACK_ROOT
from ei2.cli.workflow import VIRTUAL_TYPES, combo_choices, to_api, widget_values

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WORKFLOWS = sorted((PACK_ROOT / "workflows").glob("*.json"))
ARTIFACTS = PACK_ROOT / "test-artifacts" / "browser"
MISSING_NODES = "This workflow has missing nodes"
# What a drop on the canvas ends in: the frontend's file handler, given a File.
DROP = "async ([text, name]) => { await app.handleFile(new File([text], name, {type: 'application/json'})); }"
LOADED = "ids => ids.every(id => app.graph.getNodeById(id)) && app.graph._nodes.length === ids.length"
NODES = """() => app.graph._nodes.map(n => ({
    id: n.id, type: n.type, registered: !!LiteGraph.registered_node_types[n.type], errors: !!n.has_errors,
    widgets: Object.fromEntries((n.widgets ?? []).map(w => [w.name, w.value]))}))"""
DIALOGS = "() => Array.from(document.querySelectorAll('.p-dialog')).map(d => d.innerText).join('\\n')"


@pytest.fixture(scope="module")
def object_info(comfy_server):
    return comfy_server.get("/object_info")


@pytest.fixture(scope="module")
def page(comfy_server):
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: apt-get install -y chromium (bash .ci/test.sh does it)"
    with sync_playwright() as playwright:
        # A returning user's setting: the first-run template browser would cover the canvas in the screenshots.
        comfy_server.post("/settings/Comfy.TutorialCompleted", True)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)  # a fresh temporary profile
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(comfy_server.url)
            page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=120_000)
            yield page
        finally:
            browser.close()


def drop(page, workflow: dict, name: str) -> dict:
    """Load ``workflow`` as a drop does; returns the loaded nodes by id once all of them are on the canvas."""
    page.evaluate(DROP, [json.dumps(workflow), name])
    page.wait_for_function(LOADED, arg=[node["id"] for node in workflow["nodes"]], timeout=30_000)
    return {str(node["id"]): node for node in page.evaluate(NODES)}


def close_dialogs(page) -> None:
    for _ in range(3):
        page.keyboard.press("Escape")
    page.wait_for_function("() => !document.querySelector('.p-dialog')", timeout=10_000)


def same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(a - b) <= 1e-9 * max(1.0, abs(b))
    return a == b


def unavailable(workflow: dict, object_info: dict) -> set[str]:
    """Ids of nodes whose stored file choice (a checkpoint, a clip, tuned weights) this server does not offer."""
    missing = set()
    for node in workflow["nodes"]:
        if node["type"] in VIRTUAL_TYPES:
            continue
        spec = object_info[node["type"]]["input"]
        entries = {**spec.get("required", {}), **spec.get("optional", {})}
        for name, value in widget_values(node, object_info[node["type"]]).items():
            entry = entries.get(name)
            if entry is not None and (isinstance(entry[0], list) or entry[0] == "COMBO") and value not in combo_choices(entry):
                missing.add(str(node["id"]))
    return missing


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_frontend_loads_the_workflow_with_every_node_and_value(page, object_info, path):
    workflow = json.loads(path.read_text())
    loaded = drop(page, workflow, path.name)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"{path.stem}.png"
    page.screenshot(path=str(shot))
    print(f"screenshot: {shot}")
    assert MISSING_NODES not in page.evaluate(DIALOGS)
    assert sorted((int(i), n["type"]) for i, n in loaded.items()) == sorted((n["id"], n["type"]) for n in workflow["nodes"])
    assert [n["type"] for n in loaded.values() if not n["registered"]] == []
    # The only nodes the frontend may flag are those naming a file this test server does not have.
    assert {i for i, n in loaded.items() if n["errors"]} <= unavailable(workflow, object_info)
    for node in workflow["nodes"]:
        if node["type"] in VIRTUAL_TYPES:
            continue
        shown = loaded[str(node["id"])]["widgets"]
        for name, value in widget_values(node, object_info[node["type"]]).items():  # by name, not by position
            assert name in shown and same(shown[name], value), (node["type"], name, shown.get(name), value)
    close_dialogs(page)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_the_converter_builds_the_graph_the_frontend_queues(page, object_info, path):
    """ei2.cli.workflow.to_api (the CLI's converter) against the frontend's own graphToPrompt, on this ComfyUI."""
    workflow = json.loads(path.read_text())
    drop(page, workflow, path.name)
    queued = page.evaluate("async () => (await app.graphToPrompt()).output")
    converted = to_api(workflow, object_info)
    assert set(converted) == set(queued)
    for key, node in converted.items():
        assert node["class_type"] == queued[key]["class_type"]
        # The frontend also sends widgets the stored workflow predates (at their defaults).
        for name, value in node["inputs"].items():
            assert name in queued[key]["inputs"] and same(queued[key]["inputs"][name], value), (node["class_type"], name)
    close_dialogs(page)


# How the frontend tells the user: 0.3.75 opens a missing-nodes dialog naming the type; newer frontends
# mark the node and open an "N errors found" panel.
REPORTED = f"""() => ({DIALOGS})().includes({json.dumps(MISSING_NODES)}) || /errors? found/i.test(document.body.innerText)"""


def test_an_unknown_node_type_is_reported_by_the_frontend(page):
    """The checks above can fail: a node type ComfyUI lacks is unregistered and reported to the user."""
    workflow = json.loads(WORKFLOWS[0].read_text())
    workflow["nodes"][0]["type"] = "NoSuchEI2Node"
    loaded = drop(page, workflow, "broken.json")
    assert [node["type"] for node in loaded.values() if not node["registered"]] == ["NoSuchEI2Node"]
    page.wait_for_function(REPORTED, timeout=30_000)
    dialogs = page.evaluate(DIALOGS)
    assert MISSING_NODES not in dialogs or "NoSuchEI2Node" in dialogs
    close_dialogs(page)
