"""The ComfyUI frontend, in headless Chromium, loads every bundled workflow as a drag-and-drop does.

Chromium comes from Debian (``apt-get install chromium``; ``.ci/test.sh`` does it), driven by Playwright.
Screenshots are kept in ``test-artifacts/browser/``.
"""
from __future__ import annotations

import json
import os

import pytest
from playwright.sync_api import sync_playwright

from ei2.runner import PACK_ROOT

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WORKFLOWS = sorted((PACK_ROOT / "workflows").glob("*.json"))
ARTIFACTS = PACK_ROOT / "test-artifacts" / "browser"
MISSING_NODES = "This workflow has missing nodes"
# What a drop on the canvas ends in: the frontend's file handler, given a File.
DROP = "async ([text, name]) => { await app.handleFile(new File([text], name, {type: 'application/json'})); }"
NODES = """() => app.graph._nodes.map(n => ({id: n.id, type: n.type, registered: !!LiteGraph.registered_node_types[n.type],
                                          errors: !!n.has_errors, widgets_values: n.serialize().widgets_values ?? []}))"""


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


def drop(page, workflow: dict, name: str) -> list[dict]:
    page.evaluate(DROP, [json.dumps(workflow), name])
    page.wait_for_timeout(1500)  # dialogs open after the graph is configured
    return page.evaluate(NODES)


def dialogs(page) -> str:
    return "\n".join(page.evaluate("() => Array.from(document.querySelectorAll('.p-dialog')).map(d => d.innerText)"))


def close_dialogs(page) -> None:
    for _ in range(3):
        page.keyboard.press("Escape")
    page.wait_for_timeout(300)


def same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(a - b) <= 1e-9 * max(1.0, abs(b))
    return a == b


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_frontend_loads_the_workflow_with_every_node_and_value(page, path):
    workflow = json.loads(path.read_text())
    loaded = drop(page, workflow, path.name)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"{path.stem}.png"
    page.screenshot(path=str(shot))
    print(f"screenshot: {shot}")
    assert MISSING_NODES not in dialogs(page)
    assert [node["type"] for node in loaded if not node["registered"] or node["errors"]] == []
    assert sorted((n["id"], n["type"]) for n in loaded) == sorted((n["id"], n["type"]) for n in workflow["nodes"])
    by_id = {n["id"]: n for n in loaded}
    for node in workflow["nodes"]:
        shown, stored = by_id[node["id"]]["widgets_values"], node.get("widgets_values") or []
        assert len(shown) == len(stored) and all(map(same, shown, stored)), (node["type"], shown, stored)
    close_dialogs(page)


def test_an_unknown_node_type_is_reported_by_the_frontend(page):
    """The check above can fail: a node type ComfyUI lacks opens the missing-nodes dialog."""
    workflow = json.loads(WORKFLOWS[0].read_text())
    workflow["nodes"][0]["type"] = "NoSuchEI2Node"
    loaded = drop(page, workflow, "broken.json")
    assert MISSING_NODES in dialogs(page) and "NoSuchEI2Node" in dialogs(page)
    assert [node["type"] for node in loaded if not node["registered"]] == ["NoSuchEI2Node"]
    close_dialogs(page)
