"""UI-format workflows (what users drag into ComfyUI) → API-format graphs (what ``POST /prompt`` takes).

Driven by an ``/object_info`` dict, the way ComfyUI's frontend does it, so no ComfyUI import is needed:

* ``widgets_values`` are matched to the node's widget inputs in ``input_order`` (required, then
  optional). An INT widget carries one extra value after it (the "control after generate" mode,
  e.g. ``"fixed"``) when its spec says ``control_after_generate`` or, by default, when it is named
  ``seed``/``noise_seed``; a COMBO only when its spec says so. Trailing extras (an upload button's
  value) are ignored.
* A widget converted to an input and linked takes the link, not the stored value.
* Muted nodes (mode 2) are left out, and so are links from them. Bypassed nodes (mode 4) pass an
  input of the same type straight through to the output.
* ``Reroute`` nodes are followed; a ``PrimitiveNode`` puts its value into the widget it feeds;
  ``Note``/``MarkdownNote`` nodes are dropped.
* Newer ComfyUI's node schema (V3): a ``COMBO`` may list its choices under ``options``; a
  ``COMFY_DYNAMICCOMBO_V3`` is a combo whose chosen option brings widgets of its own, which follow
  it in ``widgets_values`` and go into the graph under dotted keys (``"format": "auto",
  "format.codec": "auto"``, as ComfyUI's ``build_nested_inputs`` reads them), nested as deep as
  the options go. ``COMFY_AUTOGROW_V3`` and ``COMFY_MATCHTYPE_V3`` inputs are slots, filled by links.
"""
from __future__ import annotations

DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", DYNAMIC_COMBO}
NOTE_TYPES = {"Note", "MarkdownNote"}
VIRTUAL_TYPES = NOTE_TYPES | {"Reroute", "PrimitiveNode"}
MUTED, BYPASSED = 2, 4


class WorkflowError(ValueError):
    pass


def widget_inputs(spec: dict) -> list[tuple[str, bool]]:
    """(name, has a control_after_generate value) for each widget input of a node, in widget order.

    Only the node's own widgets: those a chosen dynamic-combo option adds depend on the values.
    """
    return [(name, control) for name, _, control in _widgets(spec.get("input", {}), spec.get("input_order"))]


def _widgets(inputs: dict, order: dict | None = None) -> list[tuple[str, tuple, bool]]:
    """(name, spec entry, has a control value) of each widget among ``inputs`` (required, then optional)."""
    widgets = []
    for section in ("required", "optional"):
        entries = inputs.get(section) or {}
        for name in (order or {}).get(section, list(entries)):
            entry = entries[name]
            kind, options = entry[0], (entry[1] if len(entry) > 1 else {}) or {}
            kind = "COMBO" if isinstance(kind, (list, tuple)) else kind
            if kind not in WIDGET_TYPES or options.get("forceInput"):
                continue
            control = options.get("control_after_generate")
            if control is None:  # the frontend's default: seeds get a control widget
                control = kind == "INT" and name in ("seed", "noise_seed")
            widgets.append((name, entry, bool(control) and kind in ("INT", "COMBO")))
    return widgets


def combo_choices(entry) -> list:
    """The choices of a combo input's spec entry, old style (``[[...], {...}]``) or V3 (``["COMBO", {"options": [...]}]``)."""
    kind = entry[0]
    if isinstance(kind, (list, tuple)):
        return list(kind)
    options = (entry[1] if len(entry) > 1 else {}) or {}
    return [option["key"] if isinstance(option, dict) else option for option in options.get("options", [])]


def _links(workflow: dict) -> dict:
    """link id → (from node id, from slot, type); accepts list and dict link records."""
    links = {}
    for link in workflow.get("links", []):
        if isinstance(link, dict):
            links[link["id"]] = (link["origin_id"], link["origin_slot"], link.get("type"))
        else:
            links[link[0]] = (link[1], link[2], link[5] if len(link) > 5 else None)
    return links


def to_api(workflow: dict, object_info: dict) -> dict:
    """The API-format graph of ``workflow``; raises WorkflowError for unknown node types and bad values."""
    if workflow.get("definitions", {}).get("subgraphs"):
        raise WorkflowError("workflows with subgraphs are not supported; unpack the subgraph in ComfyUI first.")
    nodes = {node["id"]: node for node in workflow.get("nodes", [])}
    links = _links(workflow)
    unknown = sorted({f"{n['type']} (node {n['id']})" for n in nodes.values()
                      if n["type"] not in object_info and n["type"] not in VIRTUAL_TYPES and n.get("mode") != MUTED})
    if unknown:
        raise WorkflowError(f"unknown node types: {', '.join(unknown)}; install the custom nodes that provide them.")

    def source(link_id, seen=()):
        """What a link delivers: ("link", [node, slot]), ("value", v) or None (nothing)."""
        if link_id is None or link_id not in links or link_id in seen:
            return None
        node_id, slot, kind = links[link_id]
        node = nodes.get(node_id)
        if node is None or node.get("mode") == MUTED:
            return None
        seen = (*seen, link_id)
        if node["type"] == "Reroute":
            return source(node["inputs"][0].get("link"), seen)
        if node["type"] == "PrimitiveNode":
            return ("value", (node.get("widgets_values") or [None])[0])
        if node.get("mode") == BYPASSED:
            inputs = node.get("inputs", [])
            kind = kind or node["outputs"][slot]["type"]
            same = [i for i in ([slot] if slot < len(inputs) else []) + list(range(len(inputs)))
                    if inputs[i].get("type") == kind and inputs[i].get("link") is not None]
            return source(inputs[same[0]]["link"], seen) if same else None
        return ("link", [str(node_id), slot])

    graph = {}
    for node_id, node in sorted(nodes.items()):
        if node["type"] in VIRTUAL_TYPES or node.get("mode") in (MUTED, BYPASSED):
            continue
        spec = object_info[node["type"]]
        inputs = widget_values(node, spec)
        for slot in node.get("inputs", []):
            delivered = source(slot.get("link"))
            if delivered is not None:
                inputs[slot["name"]] = delivered[1]
        title = node.get("title") or spec.get("display_name") or node["type"]
        graph[str(node_id)] = {"class_type": node["type"], "inputs": inputs, "_meta": {"title": title}}
    return graph


def widget_values(node: dict, spec: dict) -> dict:
    """The node's stored widget values by input name (dotted for dynamic-combo children), links not applied."""
    values = node.get("widgets_values")
    if isinstance(values, dict):  # some packs store widgets by name
        names = [name for name, _, _ in _widgets(spec.get("input", {}), spec.get("input_order"))]
        return {name: value for name, value in values.items() if name in names or name.split(".")[0] in names}
    values, out, index = list(values or []), {}, 0

    def read(inputs, order, prefix):
        """Assign values to the widgets of ``inputs`` in order; False once the values run out."""
        nonlocal index
        for name, entry, control in _widgets(inputs, order):
            if index >= len(values):
                return False
            key, value = prefix + name, values[index]
            out[key] = value
            index += 2 if control else 1
            if entry[0] == DYNAMIC_COMBO:
                chosen = [option for option in entry[1]["options"] if option["key"] == value]
                if not chosen:
                    raise WorkflowError(f"{node['type']} (node {node['id']}): {key}={value!r} is not one of "
                                        f"{', '.join(option['key'] for option in entry[1]['options'])}.")
                if not read(chosen[0].get("inputs", {}), None, key + "."):
                    return False
        return True

    read(spec.get("input", {}), spec.get("input_order"), "")
    return out


def find_nodes(graph: dict, class_type: str, title: str | None = None) -> list[dict]:
    """The API nodes of ``class_type`` (and, if given, whose title starts with ``title``), in id order."""
    return [node for _, node in sorted(graph.items(), key=lambda item: int(item[0]) if item[0].isdigit() else 0)
            if node["class_type"] == class_type and (title is None or node["_meta"]["title"].startswith(title))]


def set_inputs(graph: dict, class_type: str, title: str | None = None, **values) -> None:
    """Set ``values`` on every node of ``class_type`` (optionally only those whose title starts with ``title``)."""
    found = find_nodes(graph, class_type, title)
    if not found:
        raise WorkflowError(f"the workflow has no {class_type} node" + (f" titled '{title}…'" if title else ""))
    for node in found:
        node["inputs"].update(values)
