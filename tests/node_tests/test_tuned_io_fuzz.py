"""EI2LoadTuned on damaged files: a seeded fuzz of a real file written by EI2SaveTuned.

Each mutated file is either refused with a plain ValueError that names the file and says what to do, or it
loads and changes nothing but what tuning changes (the query-projection patches and the temporal modules,
exactly as the file holds them). The input MODEL never changes, no load hangs or grows memory by what a
header claims, and the in-process ComfyUI still loads and samples afterwards. ``pytest -s`` prints the tallies.
"""
from __future__ import annotations

import copy
import faulthandler
import json
import random
import resource
import struct
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as read_safetensors
from safetensors.torch import save as write_safetensors

from harness.checkpoint import random_conditioning, small_sd15_model
from harness.graphs import INFLATE_DEFAULTS

pytestmark = pytest.mark.slow

FRAMES = 4
SEED = 23  # issue #23
CASE_SECONDS = 10  # one load takes ~20 ms on one core: longer than this counts as a hang
HANG_SECONDS = 120  # a load that never returns ends the whole run, its stacks on stderr (pytest -s shows them)
MEMORY_GROWTH = 256 * 2**20  # peak RSS the whole fuzz loop may add (the file is 0.5 MB; a 10^12-element tensor is 4 TB)
# What every refusal tells the user to do: tune again, re-save, choose another file or fix the model's options.
ADVICE = ("tune the clip again", "tune again", "EI2SaveTuned", "set EI2InflateUNet to match", "another model",
          "connect", "add EI2InflateUNet")


# --- the real file ------------------------------------------------------------------------------------

class Original:
    """The file EI2SaveTuned wrote, taken apart: raw bytes, header JSON, data section, tensors, metadata
    (and ``unet_keys``, the UNet's untuned weights as (name, shape), set by the test)."""

    def __init__(self, data: bytes):
        length = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8: 8 + length])
        self.body = data[8 + length:]
        # safetensors writes the metadata in hash order, which changes from process to process: written in sorted
        # order (the same file otherwise), every run mutates the same bytes.
        self.metadata = dict(sorted(header.pop("__metadata__").items()))
        self.header = {"__metadata__": self.metadata, **dict(sorted(header.items()))}
        self.header_bytes = json.dumps(self.header).encode()
        self.data = raw_file(self.header_bytes, self.body)
        self.tensors = read_safetensors(self.data)
        self.keys = sorted(self.tensors)
        assert self.tensors.keys() == read_safetensors(data).keys()

    def entries(self) -> dict:
        return copy.deepcopy({k: v for k, v in self.header.items() if k != "__metadata__"})


def raw_file(header: dict | bytes, body: bytes) -> bytes:
    """A safetensors file from header JSON (or raw header bytes) and a data section."""
    header_bytes = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(header_bytes)) + header_bytes + body


def written(tensors: dict, metadata: dict | None) -> bytes:
    return write_safetensors(tensors, metadata=metadata)


# --- mutations: each takes (rng, original) and returns the bytes of one damaged file ----------------------

def header_length(rng, s):
    n = len(s.header_bytes)
    return struct.pack("<Q", rng.choice([
        n + rng.randint(1, 64), n - rng.randint(1, 64), 0, rng.randint(1, 7), len(s.data) - 8,
        len(s.data) + rng.randint(0, 10**6), 2**63, 2**64 - 1, rng.getrandbits(64), rng.getrandbits(32),
        100_000_001])) + s.data[8:]


def offsets(rng, s):
    entries = s.entries()
    a, b = rng.sample(s.keys, 2)
    begin, end = entries[a]["data_offsets"]
    if rng.random() < 0.2:  # two tensors of one shape swapped: still a valid file, with the values exchanged
        other = rng.choice([k for k in s.keys if k != a and s.tensors[k].shape == s.tensors[a].shape])
        entries[a]["data_offsets"], entries[other]["data_offsets"] = entries[other]["data_offsets"], [begin, end]
    else:
        entries[a]["data_offsets"] = rng.choice([
            list(entries[b]["data_offsets"]),  # overlaps another tensor
            [begin + rng.randint(-4096, 4096), end + rng.randint(-4096, 4096)],
            [begin, len(s.body) + rng.randint(1, 10**6)], [end, begin], [0, 2**64 - 1], [2**63, 2**63 + end - begin],
            [-4, end], [str(begin), str(end)], [float(begin), float(end)], [begin, end, end], [],
        ])
    return raw_file({"__metadata__": s.metadata, **entries}, s.body)


def huge_size(rng, s):
    entries = s.entries()
    key = rng.choice(s.keys)
    shape = rng.choice([[10**6, 10**6], [10**12], [2**32, 2**32], [2**63], [10**4, 10**4, 10**4], [2**40, 2**40, 2**40]])
    begin = entries[key]["data_offsets"][0]
    elements = 1
    for size in shape:
        elements *= size
    declared = rng.choice([entries[key]["data_offsets"], [begin, begin + 4 * elements]])
    if rng.random() < 0.5:
        entries[key]["shape"], entries[key]["data_offsets"] = shape, declared
    else:  # an extra tensor at the end that claims to be huge
        entries["delta.huge"] = {"dtype": "F32", "shape": shape, "data_offsets": [len(s.body), len(s.body) + 4 * elements]}
    return raw_file({"__metadata__": s.metadata, **entries}, s.body)


def truncated(rng, s):
    n = 8 + len(s.header_bytes)
    return s.data[: rng.choice([rng.randrange(0, 8), rng.randrange(8, n), rng.randrange(n, len(s.data)), len(s.data) - 1])]


def extra_bytes(rng, s):
    extra = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4096)))
    return rng.choice([s.data + extra, s.data + b"\0" * len(extra), extra + s.data, s.data[:8] + extra[:8] + s.data[8:]])


def byte_flips(rng, s):
    data = bytearray(s.data)
    n = 8 + len(s.header_bytes)
    region = rng.choice([(8, n), (n, len(data)), (0, len(data))])  # header JSON, tensor data, anywhere
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(*region)] ^= rng.choice([1 << rng.randrange(8), rng.randint(1, 255)])
    return bytes(data)


def header_garbage(rng, s):
    text = s.header_bytes.decode()
    duplicate = text[:-1] + ", " + json.dumps(s.keys[0]) + ": " + json.dumps(s.header[s.keys[1]]) + "}"
    without_field = s.entries()
    del without_field[rng.choice(s.keys)][rng.choice(["dtype", "shape", "data_offsets"])]
    header = rng.choice([
        bytes(rng.getrandbits(8) for _ in range(len(s.header_bytes))), b"not json " * 40, b"[]", b"null", b"42",
        b'"text"', b"[" * 5000 + b"]" * 5000, duplicate.encode(), s.header_bytes + b"}garbage",
        s.header_bytes[: len(s.header_bytes) // 2], b"\xff\xfe" + s.header_bytes[2:],
        json.dumps({**s.entries(), "__metadata__": {"frames": 4, "ei2_format": 2}}).encode(),  # not strings
        json.dumps({**s.entries(), "__metadata__": ["ei2_format", "2"]}).encode(),
        json.dumps({"__metadata__": s.metadata, **without_field}).encode(),
    ])
    return raw_file(header, s.body)


def dtypes(rng, s):
    key = rng.choice(s.keys)
    if rng.random() < 0.3:  # the same bytes declared as another 4-byte type: a valid file of integers
        entries = s.entries()
        entries[key]["dtype"] = rng.choice(["I32", "U32"])
        return raw_file({"__metadata__": s.metadata, **entries}, s.body)
    dtype = rng.choice([torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.int8,
                        torch.uint8, torch.bool])
    keys = s.keys if rng.random() < 0.2 else [key]  # a whole file converted, or one tensor
    return written({k: v.to(dtype) if k in keys else v for k, v in s.tensors.items()}, s.metadata)


def shapes(rng, s):
    key = rng.choice(s.keys)
    t = s.tensors[key]
    changed = rng.choice([t.flatten(), t.unsqueeze(0), t.reshape(-1, 16), t[:-1], torch.cat([t, t[:1]]),
                          t.flatten()[0].clone(), t.flip(0), torch.zeros(128, 128)])  # flip: same shape, loads
    return written({**s.tensors, key: changed.contiguous()}, s.metadata)


def non_finite(rng, s):
    tensors = dict(s.tensors)
    for key in rng.sample(s.keys, rng.randint(1, 3)):
        t = tensors[key].clone().flatten()
        value = rng.choice([float("nan"), float("inf"), float("-inf"), 3.4e38, -0.0])  # the last two are finite
        if rng.random() < 0.2:
            t[:] = value
        else:
            for _ in range(rng.randint(1, 5)):
                t[rng.randrange(t.numel())] = value
        tensors[key] = t.reshape(s.tensors[key].shape)
    return written(tensors, s.metadata)


def extra_keys(rng, s):
    query = rng.choice([k for k in s.keys if k.startswith("delta.")])
    block = rng.choice([k for k in s.keys if k.startswith("temporal.")]).split(".")[1]
    unet_key = rng.choice(s.unet_keys)
    name, value = rng.choice([
        (f"delta.{unet_key[0]}", torch.zeros(unet_key[1])),  # a real UNet weight that tuning never changes
        ("delta.diffusion_model.nonexistent.weight", torch.zeros(4, 4)),
        (f"temporal.{block}.to_k.bias", torch.zeros(32)), ("temporal.input_99_0.to_q.weight", torch.zeros(32, 32)),
        (unet_key[0], torch.zeros(unet_key[1])),  # a full UNet weight, as in a checkpoint
        ("lora_unet_input_blocks_1_1.alpha", torch.tensor(1.0)), (query.replace("delta.", "Delta."), s.tensors[query].clone()),
        ("".join(rng.choice("abcxyz._0123") for _ in range(12)), torch.randn(3)),
    ])
    return written({**s.tensors, name: value}, s.metadata)


def missing_keys(rng, s):
    deltas, temporal = [k for k in s.keys if k.startswith("delta.")], [k for k in s.keys if k.startswith("temporal.")]
    drop = set(rng.choice([[rng.choice(deltas)], [rng.choice(temporal)], deltas, temporal, s.keys,
                           rng.sample(s.keys, len(s.keys) // 3), rng.sample(deltas, 5)]))
    return written({k: v for k, v in s.tensors.items() if k not in drop}, rng.choice([s.metadata] * 4 + [None]))


def metadata(rng, s):
    meta = dict(s.metadata)
    key = rng.choice(sorted(meta))
    inflation = json.loads(meta["inflation"])
    options = ["attention_type", "coarse_stride", "coarse_type", "temporal_type", "temporal_placement",
               "centering_type", "mapping_type"]
    option = rng.choice(options)
    other_choice = {"attention_type": "per_frame", "coarse_stride": 4, "coarse_type": "max", "temporal_type": "vanilla",
                    "temporal_placement": "after_self_attention", "centering_type": "tokens", "mapping_type": "plain"}
    change = rng.choice(["drop", "garbage", "wrong_type", "inflation", "inflation", "whole", "format", "values"])
    if change == "drop":
        del meta[key]
    elif change == "garbage":
        meta[key] = rng.choice(["{", "", "not json", "\x00\x01", "[" * 5000, "9" * 5000, "'4'",
                                "".join(chr(rng.randint(32, 0x2FFF)) for _ in range(20))])
    elif change == "wrong_type":
        meta[key] = rng.choice(["[]", "{}", "null", "true", '"4"', "4.5", "-3", "1e999", "NaN", "[1, 2]"])
    elif change == "inflation":
        wrong = rng.choice([
            {**inflation, option: other_choice.get(option, "x")},  # another real choice: the model must match
            {**inflation, option: "bogus"}, {**inflation, "coarse_stride": "2"}, {**inflation, "coarse_stride": 2.0},
            {**inflation, "coarse_stride": 0}, {**inflation, "coarse_stride": True},
            {k: v for k, v in inflation.items() if k != option}, {**inflation, "extra_option": 1},
            {**inflation, "seed": 5},  # inflation's seed only draws initial weights: the file replaces them
            list(inflation.items()),
        ])
        meta["inflation"] = json.dumps(wrong)
    elif change == "whole":
        meta = rng.choice([None, {}, {"ei2_format": "2"}, {**meta, "unknown_key": "1"}, {"format": "pt"}])
    elif change == "format":
        meta["ei2_format"] = rng.choice(["1", "3", "", "2 ", "two", "x" * 5000])
    else:  # values a user could not have set through EI2OneShotTune
        key = rng.choice(["frames", "steps", "learning_rate", "train", "seed", "base_fingerprint"])
        meta[key] = rng.choice({"frames": ["0", "-4", "4.0", "1e9"], "steps": ["-1", "2.5", "1000000"],
                                "learning_rate": ["-1e-3", "1e999", "0"], "train": ['"queries"', '"everything"', "1"],
                                "seed": ["1.5", "-1", "18446744073709551616"],
                                "base_fingerprint": ["0" * 16, "", "{not json"]}[key])
    return written(s.tensors, meta)


KINDS = {  # kind: (cases, mutation)
    "header_length": (20, header_length), "offsets": (24, offsets), "huge_size": (20, huge_size),
    "truncated": (16, truncated), "extra_bytes": (10, extra_bytes), "byte_flips": (40, byte_flips),
    "header_garbage": (20, header_garbage), "dtypes": (20, dtypes), "shapes": (20, shapes),
    "non_finite": (20, non_finite), "extra_keys": (20, extra_keys), "missing_keys": (20, missing_keys),
    "metadata": (50, metadata),
}
# Kinds no valid file can come out of: every case must be refused.
ALWAYS_REFUSED = {"header_length", "huge_size", "truncated", "extra_bytes", "header_garbage", "dtypes", "extra_keys"}


# --- the MODEL, before and after ------------------------------------------------------------------------

def prediction(model) -> torch.Tensor:
    """The MODEL's ε-prediction for a fixed noisy clip, through ComfyUI's own loading and patching."""
    import comfy.model_management

    comfy.model_management.load_models_gpu([model, *model.get_nested_additional_models()])
    x = torch.randn(FRAMES, 4, 4, 4, generator=torch.Generator().manual_seed(7)) * 3
    with torch.inference_mode():
        return model.model.apply_model(x, torch.full((FRAMES,), 3.0),
                                       c_crossattn=random_conditioning(5)[0][0].expand(FRAMES, -1, -1),
                                       transformer_options={**model.model_options["transformer_options"],
                                                            "cond_or_uncond": [0]}).clone()


def temporal_state(patching, model) -> dict:
    return {k: v.clone() for k, v in patching.temporal_modules(model).state_dict().items()}


def snapshot(patching, model) -> dict:
    """Everything of ``model`` a load could change by mistake."""
    return dict(weights={k: v.clone() for k, v in model.model.diffusion_model.state_dict().items()},
                temporal=temporal_state(patching, model), object_patches=dict(model.object_patches),
                options=set(model.model_options), transformer_options=set(model.model_options["transformer_options"]))


def assert_untouched(patching, model, before: dict):
    assert not model.patches and "ei2_tuned" not in model.model_options
    assert model.object_patches == before["object_patches"]
    assert set(model.model_options) == before["options"]
    assert set(model.model_options["transformer_options"]) == before["transformer_options"]
    after = snapshot(patching, model)
    for part in ("weights", "temporal"):
        assert after[part].keys() == before[part].keys()
        assert all(torch.equal(after[part][k], v) for k, v in before[part].items()), part


def assert_only_tuning_changed(patching, loaded, fresh, before: dict, data: bytes, queries: set):
    """``loaded`` differs from ``fresh`` by exactly the file's deltas (as query patches) and temporal tensors."""
    held = read_safetensors(data)  # it loaded, so it reads
    deltas = {k.removeprefix("delta."): v for k, v in held.items() if k.startswith("delta.")}
    assert set(loaded.patches) == set(deltas) <= queries
    assert all(len(patches) == 1 and torch.equal(patches[0][1][0], deltas[k]) for k, patches in loaded.patches.items())
    assert loaded.model is fresh.model  # the shared UNet: no weight replaced
    assert set(loaded.object_patches) == set(before["object_patches"])  # the temporal wiring, nothing more
    assert set(loaded.model_options) == before["options"] | {"ei2_tuned"}
    temporal = {k.removeprefix("temporal."): v for k, v in held.items() if k.startswith("temporal.")}
    state = patching.temporal_modules(loaded).state_dict()
    assert state.keys() == temporal.keys() and all(torch.equal(state[k], v) for k, v in temporal.items())


# --- the fuzz -------------------------------------------------------------------------------------------

def node_load(pack, model, name: str):
    with torch.inference_mode():
        return pack.NODE_CLASS_MAPPINGS["EI2LoadTuned"]().load(model, name)[0]


def outcome(error: BaseException | None, name: str) -> str:
    """The tally label: 'loaded', or the message's start with the file name taken out."""
    return "loaded" if error is None else str(error).replace(name, "<file>")[:72]


def test_damaged_tuned_weights_are_refused_clearly_or_change_only_what_tuning_changes(pack, comfyui):
    import importlib

    patching = importlib.import_module(pack.__name__ + ".nodes.adapter.patching")
    base = small_sd15_model()
    with torch.inference_mode():
        fresh = pack.NODE_CLASS_MAPPINGS["EI2InflateUNet"]().inflate(base, **INFLATE_DEFAULTS)[0]
        latent = {"samples": torch.randn(FRAMES, 4, 4, 4, generator=torch.Generator().manual_seed(3))}
        tuned = pack.NODE_CLASS_MAPPINGS["EI2OneShotTune"]().tune(
            fresh, latent, random_conditioning(5), 1, 1e-3, "temporal_and_queries", 0, False)[0]
        saved = pack.NODE_CLASS_MAPPINGS["EI2SaveTuned"]().save(tuned, "ei2_tuned/fuzz_source")["ui"]["text"][0]
    output = Path(comfyui.folder_paths.get_output_directory())
    original = Original((output / saved).read_bytes())
    folder = output / "ei2_tuned" / "fuzz"
    folder.mkdir()
    queries = set(patching.query_weight_keys(fresh))
    original.unet_keys = [(k, tuple(v.shape)) for k, v in fresh.model.named_parameters() if k not in queries]

    tuned_prediction, fresh_prediction = prediction(tuned), prediction(fresh)  # fresh last: no patch applied now
    before = snapshot(patching, fresh)
    (folder / "unchanged.safetensors").write_bytes(original.data)  # what every mutation starts from loads
    unchanged = node_load(pack, fresh, "fuzz/unchanged.safetensors")
    assert_only_tuning_changed(patching, unchanged, fresh, before, original.data, queries)
    rng = random.Random(SEED)
    tallies, slowest = Counter(), 0.0
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for kind, (count, mutate) in KINDS.items():
        for index in range(count):
            data = mutate(rng, original)
            name = f"fuzz/{kind}_{index:03}.safetensors"
            (folder.parent / name).write_bytes(data)
            error = loaded = None
            faulthandler.dump_traceback_later(HANG_SECONDS, exit=True, file=sys.__stderr__)
            start = time.monotonic()
            try:
                loaded = node_load(pack, fresh, name)
            except Exception as raised:  # noqa: BLE001 — which type it is, is what is checked
                error = raised
            finally:
                seconds = time.monotonic() - start
                faulthandler.cancel_dump_traceback_later()
            slowest = max(slowest, seconds)
            label = f"{kind} #{index}: {error!r}"
            assert seconds < CASE_SECONDS, label
            if error is not None:
                # A plain ValueError of ours: no json/safetensors/torch error (JSONDecodeError is a ValueError too).
                assert type(error) is ValueError, label
                assert name in str(error) and any(advice in str(error) for advice in ADVICE), label
            else:
                assert kind not in ALWAYS_REFUSED, label
                assert_only_tuning_changed(patching, loaded, fresh, before, data, queries)
            assert_untouched(patching, fresh, before)
            tallies[kind, outcome(error, name)] += 1
            (folder.parent / name).unlink()
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak_before

    print(f"\n{sum(tallies.values())} damaged files, slowest load {slowest * 1000:.0f} ms, "
          f"peak memory +{growth / 2**20:.0f} MiB")
    for (kind, label), n in sorted(tallies.items()):
        print(f"{kind:15} {n:3}  {label}")
    assert sum(tallies.values()) >= 200 and growth < MEMORY_GROWTH
    for kind in KINDS:  # every kind damaged at least one file beyond use
        assert any(k == kind and label != "loaded" for k, label in tallies), kind
    assert any(label == "loaded" for _, label in tallies)  # valid files among the mutants still load

    # Nothing leaked into the input MODEL or ComfyUI: it predicts as before, and a normal load + sample works.
    assert torch.equal(prediction(fresh), fresh_prediction)
    loaded = node_load(pack, fresh, Path(saved).name)
    assert torch.equal(prediction(loaded), tuned_prediction)
    with torch.inference_mode():
        samples = comfyui.nodes.KSampler().sample(
            loaded, 0, 2, 7.0, "ddim", "ddim_uniform", random_conditioning(1), random_conditioning(2),
            {"samples": torch.zeros(FRAMES, 4, 4, 4)})[0]["samples"]
    assert samples.shape == (FRAMES, 4, 4, 4) and torch.isfinite(samples).all()
