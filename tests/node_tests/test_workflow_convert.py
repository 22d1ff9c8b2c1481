"""UI → API conversion (ei2.cli.workflow) against node specs taken from the real, in-process ComfyUI."""
from __future__ import annotations

import asyncio
import json

import pytest

from ei2.cli.runner import PACK_ROOT
from ei2.cli.workflow import WorkflowError, combo_choices, set_inputs, to_api, widget_inputs

WORKFLOWS = sorted((PACK_ROOT / "workflows").glob("*.json"))


@pytest.fixture(scope="module")
def object_info(comfyui, pack):
    """/object_info's per-node entries (input, input_order, output) for every registered node."""
    video_nodes = comfyui.path / "comfy_extras" / "nodes_video.py"  # CreateVideo, SaveVideo: not loaded in-process
    if "SaveVideo" not in comfyui.nodes.NODE_CLASS_MAPPINGS:
        assert asyncio.run(comfyui.nodes.load_custom_node(str(video_nodes), module_parent="comfy_extras"))
    info = {}
    for name, cls in comfyui.nodes.NODE_CLASS_MAPPINGS.items():
        if hasattr(cls, "GET_NODE_INFO_V1"):  # v3 nodes describe themselves
            info[name] = cls.GET_NODE_INFO_V1()
        else:
            types = cls.INPUT_TYPES()
            info[name] = {"input": types, "input_order": {key: list(value) for key, value in types.items()},
                          "output": list(cls.RETURN_TYPES)}
    return info


def node(id, type, widgets=None, inputs=(), outputs=(), mode=0, title=None):
    record = {"id": id, "type": type, "mode": mode, "widgets_values": widgets,
              "inputs": [{"name": name, "type": kind, "link": link} for name, kind, link in inputs],
              "outputs": [{"name": kind, "type": kind, "links": links} for kind, links in outputs]}
    if title:
        record["title"] = title
    return record


def test_seed_widgets_carry_a_control_value_other_ints_do_not(object_info):
    assert widget_inputs(object_info["KSampler"]) == [("seed", True), ("steps", False), ("cfg", False),
                                                      ("sampler_name", False), ("scheduler", False), ("denoise", False)]
    assert ("seed", True) in widget_inputs(object_info["EI2Sample"])  # no flag in its spec: named seed
    spec = {"input": {"required": {"seed": ("INT", {"control_after_generate": False}),
                                   "count": ("INT", {"control_after_generate": True}),
                                   "image": ("IMAGE",), "text": ("STRING", {"forceInput": True})}}}
    assert widget_inputs(spec) == [("seed", False), ("count", True)]


def test_bundled_edit_workflow_converts_to_the_recipe(object_info):
    graph = to_api(json.loads((PACK_ROOT / "workflows" / "ei2_video_edit.json").read_text()), object_info)
    by_type = {value["class_type"]: value for value in graph.values()}
    assert "Note" not in by_type
    tune = by_type["EI2OneShotTune"]["inputs"]
    assert tune["steps"] == 500 and tune["seed"] == 0 and tune["gradient_checkpointing"] is True  # after "fixed"
    sample = by_type["EI2Sample"]["inputs"]
    assert (sample["steps"], sample["cfg"], sample["eta"], sample["seed"]) == (50, 7.5, 0.0, 0)
    loader_id = next(key for key, value in graph.items() if value["class_type"] == "LoadVideoFrames")
    assert by_type["LoadVideoFrames"]["inputs"] == {  # the upload button's trailing value is not an input
        "video": "clip.mp4", "frame_load_cap": 16, "skip_first_frames": 0, "select_every_nth": 1,
        "width": 512, "height": 512, "resize": "crop"}
    assert by_type["CreateVideo"]["inputs"]["fps"] == [loader_id, 2]  # widget turned input: the link wins
    assert by_type["CreateVideo"]["inputs"]["audio"] == [loader_id, 3]  # the clip's sound goes into the video
    assert by_type["SaveVideo"]["inputs"]["format"] == "auto"
    set_inputs(graph, "CLIPTextEncode", "Edit prompt", text="a cat")
    texts = {value["_meta"]["title"]: value["inputs"]["text"] for value in graph.values()
             if value["class_type"] == "CLIPTextEncode"}
    assert texts["Edit prompt (what it should show)"] == "a cat" and texts["Source prompt (what the clip shows)"] != "a cat"


def test_comparison_workflow_runs_each_method_with_its_papers_settings(object_info):
    """EI²: ffam + stam, guidance 7.5. Tune-A-Video: sparse_causal + vanilla after the feed-forward, guidance 12.5."""
    graph = to_api(json.loads((PACK_ROOT / "workflows" / "ei2_vs_tuneavideo.json").read_text()), object_info)

    def upstream(key, class_type):  # follow the model links back to the first node of class_type
        while graph[key]["class_type"] != class_type:
            key = graph[key]["inputs"]["model"][0]
        return graph[key]["inputs"]

    samplers = [key for key, value in graph.items() if value["class_type"] == "EI2Sample"]
    settings = {upstream(key, "EI2InflateUNet")["temporal_type"]: (upstream(key, "EI2InflateUNet"), graph[key]["inputs"])
                for key in samplers}
    assert set(settings) == {"stam", "vanilla"}
    (ei2, ei2_sample), (tav, tav_sample) = settings["stam"], settings["vanilla"]
    assert (ei2["attention_type"], ei2_sample["cfg"]) == ("ffam", 7.5)
    assert (tav["attention_type"], tav["temporal_placement"], tav_sample["cfg"]) == ("sparse_causal", "after_feedforward", 12.5)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_bundled_workflow_converts_with_all_required_inputs(object_info, path):
    graph = to_api(json.loads(path.read_text()), object_info)
    for key, value in graph.items():
        required = object_info[value["class_type"]]["input"].get("required", {})
        assert set(required) <= set(value["inputs"]), (path.name, key, value)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_create_video_gets_the_frames_fps_and_sound_of_load_video_frames(object_info, path):
    graph = to_api(json.loads(path.read_text()), object_info)
    [loader] = [key for key, value in graph.items() if value["class_type"] == "LoadVideoFrames"]
    videos = [value["inputs"] for value in graph.values() if value["class_type"] == "CreateVideo"]
    assert videos and all(inputs["fps"] == [loader, 2] and inputs["audio"] == [loader, 3] for inputs in videos)
    assert object_info["LoadVideoFrames"]["output"][3] == "AUDIO"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_bundled_workflow_links_agree_with_its_nodes(path):
    """The links table, the nodes' input and output slots and last_link_id tell the same story."""
    workflow = json.loads(path.read_text())
    nodes = {node["id"]: node for node in workflow["nodes"]}
    ids = [link[0] for link in workflow["links"]]
    assert len(ids) == len(set(ids)) and max(ids) <= workflow["last_link_id"]
    for link_id, origin, origin_slot, target, target_slot, kind in workflow["links"]:
        output = nodes[origin]["outputs"][origin_slot]
        assert link_id in output["links"] and output["type"] == kind, (path.name, link_id)
        assert nodes[target]["inputs"][target_slot]["link"] == link_id, (path.name, link_id)
    linked = sorted(link for node in nodes.values() for output in node.get("outputs", []) for link in output["links"] or [])
    assert linked == sorted(ids)


def dynamic_combo(options: dict) -> tuple:
    """A V3 dynamic combo spec: option key -> the inputs (required) that option brings."""
    return ("COMFY_DYNAMICCOMBO_V3", {"options": [{"key": key, "inputs": {"required": inputs}}
                                                 for key, inputs in options.items()]})


def test_dynamic_combos_expand_into_dotted_keys_as_deep_as_the_chosen_options_go():
    encoding = dynamic_combo({"auto": {}, "re-encode": {"crf": ("FLOAT", {"default": 23.0}),
                                                        "color_space": ("COMBO", {"options": ["auto", "sRGB"]})}})
    codec = dynamic_combo({"auto": {}, "h264": {"encoding": encoding}})
    spec = {"input": {"required": {"video": ("VIDEO",), "filename_prefix": ("STRING", {}),
                                   "format": dynamic_combo({"auto": {"codec": codec}, "webm": {}}),
                                   "seed": ("INT", {})}},
            "input_order": {"required": ["video", "filename_prefix", "format", "seed"]}, "output": []}
    info = {"SaveVideo": spec}

    def convert(*widgets):
        return to_api({"nodes": [node(1, "SaveVideo", list(widgets))], "links": []}, info)["1"]["inputs"]

    assert convert("clip", "auto", "auto", 7, "fixed") == {
        "filename_prefix": "clip", "format": "auto", "format.codec": "auto", "seed": 7}
    assert convert("clip", "auto", "h264", "re-encode", 18.0, "sRGB", 7, "fixed") == {
        "filename_prefix": "clip", "format": "auto", "format.codec": "h264", "format.codec.encoding": "re-encode",
        "format.codec.encoding.crf": 18.0, "format.codec.encoding.color_space": "sRGB", "seed": 7}
    assert convert("clip", "webm", 3, "fixed") == {"filename_prefix": "clip", "format": "webm", "seed": 3}
    with pytest.raises(WorkflowError, match=r"SaveVideo \(node 1\): format.codec='vp9' is not one of auto, h264"):
        convert("clip", "auto", "vp9")


def test_combo_choices_read_old_and_v3_combo_specs():
    assert combo_choices([["a.safetensors", "b.safetensors"], {}]) == ["a.safetensors", "b.safetensors"]
    assert combo_choices(["COMBO", {"options": ["a.safetensors", "b.safetensors"]}]) == ["a.safetensors", "b.safetensors"]
    assert combo_choices(["COMBO", {}]) == []


def test_save_video_converts_on_this_comfyui(object_info):
    """0.3.75: format and codec are plain combos; newer ComfyUI: codec is nested under the dynamic combo format."""
    graph = to_api(json.loads((PACK_ROOT / "workflows" / "ei2_video_edit.json").read_text()), object_info)
    inputs = next(value["inputs"] for value in graph.values() if value["class_type"] == "SaveVideo")
    nested = object_info["SaveVideo"]["input"]["required"]["format"][0] == "COMFY_DYNAMICCOMBO_V3"
    assert inputs["format"] == "auto" and inputs["format.codec" if nested else "codec"] == "auto"


def test_reroute_primitive_bypass_and_mute(object_info):
    workflow = {
        "nodes": [
            node(1, "CheckpointLoaderSimple", ["m.safetensors"], outputs=[("MODEL", [1]), ("CLIP", [2]), ("VAE", [3])]),
            node(2, "Reroute", inputs=[("", "*", 2)], outputs=[("*", [4, 5])]),
            node(3, "CLIPTextEncode", ["up"], inputs=[("clip", "CLIP", 4)], outputs=[("CONDITIONING", [6])], title="pos"),
            node(4, "CLIPTextEncode", ["down"], inputs=[("clip", "CLIP", 5)], outputs=[("CONDITIONING", [7])]),
            node(5, "EmptyLatentImage", [64, 64, 1], outputs=[("LATENT", [8])]),
            node(6, "PrimitiveNode", [17, "fixed"], outputs=[("INT", [9])]),
            node(7, "KSampler", [5, "randomize", 20, 6.5, "euler", "normal", 0.75],
                 inputs=[("model", "MODEL", 1), ("positive", "CONDITIONING", 6), ("negative", "CONDITIONING", 7),
                         ("latent_image", "LATENT", 8), ("steps", "INT", 9)], outputs=[("LATENT", [10])]),
            node(8, "VAEDecode", inputs=[("samples", "LATENT", 10), ("vae", "VAE", 3)], outputs=[("IMAGE", [11])]),
            node(9, "ImageInvert", inputs=[("image", "IMAGE", 11)], outputs=[("IMAGE", [12, 13])], mode=4),
            node(10, "SaveImage", ["kept"], inputs=[("images", "IMAGE", 12)]),
            node(11, "SaveImage", ["muted"], inputs=[("images", "IMAGE", 13)], mode=2),
            node(12, "PreviewImage", inputs=[("images", "IMAGE", 14)]),
            node(13, "ImageInvert", inputs=[("image", "IMAGE", None)], outputs=[("IMAGE", [14])], mode=2),
            node(14, "Note", ["explains things"]),
        ],
        "links": [[1, 1, 0, 7, 0, "MODEL"], [2, 1, 1, 2, 0, "CLIP"], [3, 1, 2, 8, 1, "VAE"],
                  [4, 2, 0, 3, 0, "CLIP"], [5, 2, 0, 4, 0, "CLIP"], [6, 3, 0, 7, 1, "CONDITIONING"],
                  [7, 4, 0, 7, 2, "CONDITIONING"], [8, 5, 0, 7, 3, "LATENT"], [9, 6, 0, 7, 4, "INT"],
                  [10, 7, 0, 8, 0, "LATENT"], [11, 8, 0, 9, 0, "IMAGE"], [12, 9, 0, 10, 0, "IMAGE"],
                  [13, 9, 0, 11, 0, "IMAGE"], [14, 13, 0, 12, 0, "IMAGE"]],
    }
    graph = to_api(workflow, object_info)
    assert sorted(graph, key=int) == ["1", "3", "4", "5", "7", "8", "10", "12"]  # no reroute/primitive/note/muted/bypassed
    assert graph["3"]["inputs"]["clip"] == ["1", 1]  # through the reroute
    assert graph["3"]["_meta"]["title"] == "pos"
    assert graph["7"]["inputs"] == {"seed": 5, "steps": 17, "cfg": 6.5, "sampler_name": "euler", "scheduler": "normal",
                                    "denoise": 0.75, "model": ["1", 0], "positive": ["3", 0], "negative": ["4", 0],
                                    "latent_image": ["5", 0]}
    assert graph["10"]["inputs"]["images"] == ["8", 0]  # the bypassed invert passes VAEDecode's IMAGE through
    assert "images" not in graph["12"]["inputs"]  # fed only by a muted node


def test_unknown_node_types_are_named(object_info):
    workflow = {"nodes": [node(1, "VHS_VideoCombine", [8]), node(2, "SomethingElse", mode=2)], "links": []}
    with pytest.raises(WorkflowError, match=r"unknown node types: VHS_VideoCombine \(node 1\); install"):
        to_api(workflow, object_info)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_notes_speak_only_of_prompts_the_workflow_has(path):
    """A note that tells the user about "the source prompt" needs a prompt node titled so (#23: the reuse workflow's
    note described one it does not have)."""
    import re

    workflow = json.loads(path.read_text())
    notes = " ".join(str(n["widgets_values"][0]) for n in workflow["nodes"] if n["type"] in ("Note", "MarkdownNote"))
    titles = [n.get("title", "") for n in workflow["nodes"] if n["type"] == "CLIPTextEncode"]
    if re.search(r"\bthe source prompt\b", notes, re.IGNORECASE):
        assert any(t.startswith("Source prompt") for t in titles), path.name
