"""The HunyuanVideo 1.5 text and vision nodes: the loader takes ComfyUI's files with the tokenizers ComfyUI ships or
a named folder (or a diffusers folder), refuses a wrong file, the encode node gives the authors' positive and
negative (no glyph text) and encodes a prompt once; the vision loader takes ComfyUI's clip_vision file."""

import shutil

import pytest
import torch
from hunyuan_video_suite.nodes import host
from hunyuan_video_suite.nodes.hunyuan_video_15 import text as text_nodes
from hunyuan_video_suite.nodes.hunyuan_video_15 import vision as vision_nodes
from hunyuan_video_suite.nodes.types import HV15_EMBEDS, HV15_TEXT_ENCODERS, HV15_VISION
from hunyuan_video_suite.pipelines.demo.hv15_text import (
    save_siglip,
    save_text_encoders15,
    tiny_siglip,
    tiny_text_encoders15,
)
from hunyuan_video_suite.pipelines.demo.tiny import save_text_encoders, save_vision, tiny_text_encoders
from hunyuan_video_suite.pipelines.hunyuan_video_15 import prompt_encoding
from hunyuan_video_suite.pipelines.prompt_cache import PROMPTS
from hunyuan_video_suite.pipelines.weights.checkpoints import CheckpointError

LOADER, ENCODE = text_nodes.HYVSHV15TextEncoderLoader, text_nodes.HYVSHV15TextEncode
VISION = vision_nodes.HYVSHV15VisionLoader


@pytest.fixture(scope="module")
def tiny():
    return tiny_text_encoders15(seed=0)


@pytest.fixture(scope="module")
def files(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("text_encoders")
    paths = save_text_encoders15(tiny, root)
    paths["diffusers"] = save_text_encoders15(tiny, root / "HunyuanVideo-1.5-Diffusers", layout="diffusers")["folder"]
    comfy = root / "ComfyUI" / "comfy" / "text_encoders"  # the tokenizer folders where ComfyUI ships them
    for name, role in (("qwen25_tokenizer", "qwen_tokenizer"), ("byt5_tokenizer", "byt5_tokenizer")):
        shutil.copytree(paths[role], comfy / name)
    paths["comfy_package"] = comfy.parent
    return paths


@pytest.fixture(scope="module")
def loaded(files):
    return LOADER().load(str(files["qwen"]), str(files["byt5"]), "folder", "fp32", str(files["folder"]))[0]


def same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_loader_takes_comfys_files_with_the_shipped_tokenizers(files, loaded, tiny, monkeypatch):
    assert loaded.crop_start == tiny.crop_start and next(loaded.qwen.parameters()).device == host.offload_device()
    assert loaded.qwen.dtype == torch.float32 and loaded.byt5.dtype == torch.float32
    monkeypatch.setattr(host, "comfy_package_directory", lambda: files["comfy_package"])
    shipped = LOADER().load(str(files["qwen"]), str(files["byt5"]), text_nodes.SHIPPED, "bf16")[0]
    assert shipped.qwen.dtype == torch.bfloat16 and shipped.crop_start == tiny.crop_start
    assert shipped.qwen_tokenizer("a cat")["input_ids"] == tiny.qwen_tokenizer("a cat")["input_ids"]
    monkeypatch.setattr(host, "comfy_package_directory", lambda: None)
    with pytest.raises(ValueError, match="choose 'folder'"):
        LOADER().load(str(files["qwen"]), str(files["byt5"]), text_nodes.SHIPPED, "bf16")


def test_tokenizer_folder_conventions(files):
    root = files["diffusers"]
    assert text_nodes.tokenizer_folders("folder", str(files["folder"])) == (
        str(files["qwen_tokenizer"]), str(files["byt5_tokenizer"]))
    assert text_nodes.tokenizer_folders("folder", str(root)) == (str(root / "tokenizer"), str(root / "tokenizer_2"))
    bare = str(files["qwen_tokenizer"])
    assert text_nodes.tokenizer_folders("folder", f" {bare} ") == (bare, None)
    with pytest.raises(ValueError, match="is not a folder"):
        text_nodes.tokenizer_folders("folder", "")


def test_loader_takes_a_diffusers_folder_and_refuses_a_wrong_file(files, tiny, tmp_path):
    from_folder = LOADER().load(str(files["diffusers"]), "", text_nodes.SHIPPED, "fp32")[0]
    assert same_weights(from_folder.qwen, tiny.qwen) and same_weights(from_folder.byt5, tiny.byt5)
    assert from_folder.crop_start == tiny.crop_start
    wrong = save_text_encoders(tiny_text_encoders(seed=0), tmp_path, layout="comfy", fp8=True)["llm"]
    with pytest.raises(CheckpointError, match=r"^llava_llama3_fp8_scaled\.safetensors: .*holds a Llama language model"):
        LOADER().load(str(wrong), str(files["byt5"]), "folder", "fp16", str(files["folder"]))
    with pytest.raises(ValueError, match="dtype must be one of"):
        LOADER().load(str(files["qwen"]), str(files["byt5"]), "folder", "fp8", str(files["folder"]))


def test_encode_gives_the_authors_positive_and_negative_once(loaded, monkeypatch):
    calls = []
    original = prompt_encoding.encode_prompt

    def counted(*args, **kwargs):
        calls.append(kwargs["glyphs"])
        return original(*args, **kwargs)

    monkeypatch.setattr(text_nodes, "encode_prompt", counted)
    prompt, negative = 'a shop sign that reads "BAKERY"', 'text "LOGO", blurry'
    positive, uncond = ENCODE().encode(loaded, prompt, negative)
    glyphs, glyph_mask = prompt_encoding.encode_glyphs(loaded, 'Text "BAKERY". ')
    assert torch.equal(positive.byt5, glyphs) and torch.equal(positive.byt5_mask, glyph_mask)
    assert positive.qwen.shape == (1, 1000, 128) and positive.qwen.device.type == "cpu"
    assert int(uncond.byt5_mask.sum()) == 0 and uncond.byt5.abs().sum() == 0  # the authors: no glyphs for the negative
    assert not torch.equal(uncond.qwen, positive.qwen)
    hits = PROMPTS.hits
    again = ENCODE().encode(loaded, prompt, negative)
    assert calls == [True, False] and PROMPTS.hits == hits + 2 and again[0] is positive and again[1] is uncond


def test_vision_loader_takes_comfys_file_and_refuses_llavas(tmp_path):
    siglip = tiny_siglip(seed=0)
    path = save_siglip(siglip, tmp_path / "sigclip_vision_patch14_384.safetensors")
    vision = VISION().load(str(path), "fp32")[0]
    assert next(vision.parameters()).device == host.offload_device()
    assert torch.equal(vision.state_dict()["post_layernorm.weight"], siglip.post_layernorm.weight.half().float())
    assert VISION().load(str(path), "fp16")[0].dtype == torch.float16
    llava = save_vision(tiny_text_encoders(seed=0, llava=True).vision, tmp_path / "llava_llama3_vision.safetensors")
    with pytest.raises(CheckpointError, match=r"^llava_llama3_vision\.safetensors: .*a CLIP vision tower"):
        VISION().load(str(llava), "fp16")


def test_node_metadata():
    assert LOADER.RETURN_TYPES == (HV15_TEXT_ENCODERS,) and ENCODE.RETURN_TYPES == (HV15_EMBEDS, HV15_EMBEDS)
    assert VISION.RETURN_TYPES == (HV15_VISION,)
    assert ENCODE.INPUT_TYPES()["required"]["text_encoders"][0] == HV15_TEXT_ENCODERS
    assert text_nodes.NODE_DISPLAY_NAME_MAPPINGS == {
        "HYVS_HV15TextEncoderLoader": "HunyuanVideo Suite: HV1.5 Text Encoder Loader",
        "HYVS_HV15TextEncode": "HunyuanVideo Suite: HV1.5 Text Encode"}
    assert vision_nodes.NODE_DISPLAY_NAME_MAPPINGS == {
        "HYVS_HV15VisionLoader": "HunyuanVideo Suite: HV1.5 Vision Loader"}
    for cls in (LOADER, ENCODE, VISION):
        assert cls.DESCRIPTION and cls.CATEGORY == "HunyuanVideo Suite/HunyuanVideo 1.5"
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
        inputs = cls.INPUT_TYPES()
        for name, spec in {**inputs["required"], **inputs.get("optional", {})}.items():
            assert spec[1]["tooltip"], (cls.__name__, name)
