"""The ComfyUI frontend, in headless Chromium, loads every bundled workflow as a drag-and-drop does.

Chromium comes from Debian (``apt-get install chromium``; ``.ci/test.sh`` does it), driven by Playwright.
Screenshots are kept in ``test-artifacts/browser/``. The same checks hold for ComfyUI 0.3.75's frontend
and newer ones, which add widgets (with their defaults) and flag values the server does not have.
The page is a fixed 1600×900 window (device pixel ratio 1) without the minimap, so the layout checks
see the same screen on every run.
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
# A fixed window: the stored view (extra.ds) is checked against what this screen shows.
VIEWPORT = {"width": 1600, "height": 900}


@pytest.fixture(scope="module")
def object_info(comfy_server):
    return comfy_server.get("/object_info")


@pytest.fixture(scope="module")
def page(comfy_server):
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: apt-get install -y chromium (bash .ci/test.sh does it)"
    with sync_playwright() as playwright:
        # A returning user's setting: the first-run template browser would cover the canvas in the screenshots.
        comfy_server.post("/settings/Comfy.TutorialCompleted", True)
        # The minimap is a floating overview of the graph the user toggles; off, so the screen is the canvas
        # and the frontend's fixed bars (what the stored-view check measures).
        comfy_server.post("/settings/Comfy.Minimap.Visible", False)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)  # a fresh temporary profile
        try:
            page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
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


# The layout as the frontend shows it: every node's box from the loaded graph, after the frontend sized it
# (it grows a node to fit widgets the stored size predates, e.g. optional inputs added later), with the
# title bar LiteGraph draws above pos[1]; every group's bounding box and title bar height; the view.
GEOMETRY = """() => {
    const title = LiteGraph.NODE_TITLE_HEIGHT;
    const box = n => n.flags?.collapsed
        ? [n.pos[0], n.pos[1] - title, n._collapsed_width ?? LiteGraph.NODE_COLLAPSED_WIDTH ?? n.size[0], title]
        : [n.pos[0], n.pos[1] - title, n.size[0], n.size[1] + title];
    return {
        title,
        nodes: app.graph._nodes.map(n => ({id: n.id, name: `${n.title ?? n.type} (#${n.id})`, box: box(n).map(Number)})),
        groups: (app.graph._groups ?? app.graph.groups ?? []).map(g => ({
            name: g.title, box: Array.from(g._bounding ?? g.bounding).map(Number), title: g.titleHeight ?? title})),
        ds: {scale: app.canvas.ds.scale, offset: Array.from(app.canvas.ds.offset)},
    };
}"""

# The part of the canvas the user sees: the canvas less whatever the frontend lays over its edges (side bar,
# menu and tab bars, the floating workflow name / breadcrumb and Run bar, the zoom buttons). Found by asking
# the page which element is on top, walking out from the canvas's middle: first along rows in the middle
# half of its height (left and right edges), then along columns between those (top and bottom edges).
# The canvas and the nodes' own DOM widgets (text boxes) are graph; notices (role=status, toasts: here the
# checkpoint this test server lacks) pass, as they are the server's, not the workflow's.
VISIBLE = """() => {
    const canvas = app.canvas.canvas, r = canvas.getBoundingClientRect();
    const widgets = app.graph._nodes.flatMap(n => (n.widgets ?? []).map(w => w.element).filter(Boolean));
    const notice = e => !!e.closest('[role=status], [role=alert], .p-toast');
    const graph = (x, y) => {
        const top = document.elementsFromPoint(x, y).find(e => !notice(e));
        return !!top && (top === canvas || widgets.some(w => w.contains(top) || (top.contains(w) && !top.contains(canvas))));
    };
    const within = (x, y) => x >= r.left && x < r.right && y >= r.top && y < r.bottom;
    const walk = (x, y, dx, dy) => {  // from (x, y) on in steps of 2 px while the graph shows; the last such point
        while (within(x + 2 * dx, y + 2 * dy) && graph(x + 2 * dx, y + 2 * dy)) { x += 2 * dx; y += 2 * dy; }
        return dx ? x : y;
    };
    const cx = r.left + r.width / 2, cy = r.top + r.height / 2;
    if (!graph(cx, cy)) return null;
    const lines = k => Array.from({length: k}, (_, i) => (i + 0.5) / k);
    const rows = lines(5).map(f => r.top + r.height * (0.25 + 0.5 * f));
    const left = Math.max(...rows.map(y => walk(cx, y, -1, 0)));
    const right = Math.min(...rows.map(y => walk(cx, y, 1, 0))) + 1;
    const cols = lines(16).map(f => left + (right - left) * f);
    const top = Math.max(...cols.map(x => walk(x, cy, 0, -1)));
    const bottom = Math.min(...cols.map(x => walk(x, cy, 0, 1))) + 1;
    return {left, top, right, bottom, canvas: [r.left, r.top, r.width, r.height],
            pixels: [canvas.width, canvas.height], ratio: window.devicePixelRatio};
}"""
GAP = 10  # graph units two nodes keep between them at least: closer, the frontend's outlines and shadows meet


def geometry(page) -> dict:
    """GEOMETRY once the frontend stopped resizing nodes (it sizes some of them a frame or two after the load)."""
    previous = None
    for _ in range(50):
        current = page.evaluate(GEOMETRY)
        if current == previous:
            return current
        previous = current
        page.wait_for_timeout(100)
    return current


def gap(a, b) -> float:
    """How far apart boxes [x, y, w, h] are side by side or one above the other (negative: they overlap)."""
    return max(b[0] - a[0] - a[2], a[0] - b[0] - b[2], b[1] - a[1] - a[3], a[1] - b[1] - b[3])


def apart(a, b, at_least: float = 0.0) -> bool:
    return gap(a, b) >= at_least


def inside(a, b) -> bool:
    """Box a lies within box b."""
    return b[0] <= a[0] and b[1] <= a[1] and a[0] + a[2] <= b[0] + b[2] and a[1] + a[3] <= b[1] + b[3]


def shown(box) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_two_nodes_overlap_and_groups_hold_whole_nodes(page, path):
    """As the frontend draws them (title bars included), nodes and notes keep GAP apart; a group holds a node
    whole, below its own title bar, or not at all; groups do not overlap."""
    workflow = json.loads(path.read_text())
    drop(page, workflow, path.name)
    layout = geometry(page)
    close_dialogs(page)
    nodes, groups = layout["nodes"], layout["groups"]
    problems = [f"{a['name']} {shown(a['box'])} and {b['name']} {shown(b['box'])} "
                + (f"are only {gap(a['box'], b['box']):g} apart" if apart(a["box"], b["box"]) else "overlap")
                for i, a in enumerate(nodes) for b in nodes[i + 1:] if not apart(a["box"], b["box"], GAP)]
    for group in groups:
        x, y, w, h = group["box"]
        body = [x, y + group["title"], w, h - group["title"]]
        problems += [f"{node['name']} {shown(node['box'])} is not wholly inside group {group['name']!r} "
                     f"{shown(group['box'])} below its title bar (or wholly outside it)"
                     for node in nodes if not apart(node["box"], group["box"]) and not inside(node["box"], body)]
    problems += [f"groups {a['name']!r} {shown(a['box'])} and {b['name']!r} {shown(b['box'])} overlap"
                 for i, a in enumerate(groups) for b in groups[i + 1:] if not apart(a["box"], b["box"])]
    assert not problems, f"{path.name}, title bar {layout['title']}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_the_stored_view_shows_the_whole_graph(page, path):
    """Opened in a 1600×900 window, the stored view (extra.ds) shows every node and group whole, on the part
    of the canvas the frontend's bars leave free."""
    workflow = json.loads(path.read_text())
    drop(page, workflow, path.name)
    close_dialogs(page)
    layout = geometry(page)
    view = page.evaluate(VISIBLE)
    assert view is not None, "the middle of the canvas is covered"
    assert view["ratio"] == 1 and view["pixels"] == view["canvas"][2:], view  # canvas pixels = CSS pixels
    stored = workflow["extra"]["ds"]
    ds = layout["ds"]  # the frontend opens the workflow at its stored view
    assert same(ds["scale"], stored["scale"]) and all(map(same, ds["offset"], stored["offset"])), (ds, stored)
    left, top = view["canvas"][0], view["canvas"][1]

    def on_screen(box):
        x, y, w, h = box
        return [left + (x + ds["offset"][0]) * ds["scale"], top + (y + ds["offset"][1]) * ds["scale"],
                w * ds["scale"], h * ds["scale"]]

    free = [view["left"], view["top"], view["right"] - view["left"], view["bottom"] - view["top"]]
    hidden = [f"{kind} {item['name']!r} at {shown([round(v) for v in on_screen(item['box'])])}"
              for kind, items in (("node", layout["nodes"]), ("group", layout["groups"]))
              for item in items if not inside(on_screen(item["box"]), free)]
    assert not hidden, (f"{path.name} at scale {ds['scale']}, offset {ds['offset']}: the free canvas is "
                        f"{shown(free)} (x, y, w, h on screen); partly hidden:\n" + "\n".join(hidden))
