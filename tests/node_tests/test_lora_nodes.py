"""The LoRA nodes as ComfyUI runs them, on tiny files in a `loras` folder: two chained LoRA nodes into the sampler
give the latents of the hand-merged model, for 13B and 1.5; the loader's transformer (a branch without LoRA nodes)
still samples the base model; a strength change reads no file again and installs nothing again; refusals name the
input (the other family's file, a bad block filter, a strength out of range) before any work; the inputs ComfyUI
shows."""

import copy
import dataclasses
import os

import pytest
import torch
from conftest import node_function as _node
from hunyuan_video_suite.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, host
from hunyuan_video_suite.nodes.shared import lora as shared_lora
from hunyuan_video_suite.nodes.types import HV15_TRANSFORMER, TRANSFORMER
from hunyuan_video_suite.pipelines.demo.hv15_transformer import save_transformer15, tiny_transformer15
from hunyuan_video_suite.pipelines.demo.tiny_transformer import save_transformer, tiny_transformer
from hunyuan_video_suite.pipelines.hunyuan_video_13b.prompt_encoding import TextEmbeds
from hunyuan_video_suite.pipelines.hunyuan_video_15.text_embeds import TextEmbeds15
from hunyuan_video_suite.pipelines.lora.apply import installed_loras
from safetensors.torch import save_file

TEXT, POOLED, RANK = 24, 12, 4
DIMS15 = dict(text_dim=32, byt5_dim=24, image_dim=1152)
NODES = {
    "HYVS_LoraLoader": ("HunyuanVideo Suite: LoRA", TRANSFORMER, "HunyuanVideo Suite/loaders"),
    "HYVS_HV15LoraLoader": ("HunyuanVideo Suite: HV1.5 LoRA", HV15_TRANSFORMER, "HunyuanVideo Suite/HunyuanVideo 1.5"),
}


def _lowrank(gen, out, inn, alpha):
    down, up = torch.randn(RANK, inn, generator=gen) * 0.3, torch.randn(out, RANK, generator=gen) * 0.3
    return down, up, alpha / RANK * up @ down


def _kohya_13b(path, model, seed):
    """musubi's names: the fused qkv and the single blocks' linear1 split by rows (q, k, v, mlp) by hand."""
    gen, state, deltas = torch.Generator().manual_seed(seed), {}, {}
    h = model.config.num_attention_heads * model.config.attention_head_dim
    mlp = model.single_transformer_blocks[0].proj_mlp.out_features
    qkv = ["attn.to_q", "attn.to_k", "attn.to_v"]
    for name, (out, inn), targets in (
        ("double_blocks_0_img_attn_qkv", (3 * h, h), [("transformer_blocks.0." + t, h) for t in qkv]),
        ("double_blocks_0_img_mlp_fc2", (h, mlp), [("transformer_blocks.0.ff.net.2", h)]),
        ("single_blocks_0_linear1", (3 * h + mlp, h),
         [("single_transformer_blocks.0." + t, h) for t in qkv] + [("single_transformer_blocks.0.proj_mlp", mlp)]),
    ):
        down, up, full = _lowrank(gen, out, inn, 8.0)
        state.update({f"lora_unet_{name}.lora_down.weight": down, f"lora_unet_{name}.lora_up.weight": up,
                      f"lora_unet_{name}.alpha": torch.tensor(8.0)})
        deltas.update(zip([t for t, _ in targets], full.split([rows for _, rows in targets])))
    save_file(state, str(path))
    return deltas


def _comfy_15(path, model, seed):
    """ComfyUI's 1.5 names: q, k, v fused into img_attn.qkv (down stacked, up block-diagonal, alpha x 3)."""
    gen, state, deltas = torch.Generator().manual_seed(seed), {}, {}
    for i, block in enumerate(model.transformer_blocks):
        parts = [(f"transformer_blocks.{i}.attn.{t}", *_lowrank(gen, block.attn.to_q.out_features,
                                                                block.attn.to_q.in_features, 2.0))
                 for t in ("to_q", "to_k", "to_v")]
        key = f"diffusion_model.double_blocks.{i}.img_attn.qkv"
        state.update({f"{key}.lora_down.weight": torch.cat([p[1] for p in parts]), f"{key}.alpha": torch.tensor(6.0),
                      f"{key}.lora_up.weight": torch.block_diag(*[p[2] for p in parts])})
        deltas.update({target: full for target, _, _, full in parts})
        fc2 = block.ff.net[2]
        down, up, full = _lowrank(gen, fc2.out_features, fc2.in_features, 2.0)
        key = f"diffusion_model.double_blocks.{i}.img_mlp.2"
        state.update({f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up, f"{key}.alpha": torch.tensor(2.0)})
        deltas[f"transformer_blocks.{i}.ff.net.2"] = full
    save_file(state, str(path))
    return deltas


class ComfyFolders:
    """ComfyUI's `folder_paths` as far as the host calls it, with a `loras` folder."""

    def __init__(self, root):
        self.roots = {"loras": str(root / "loras"), "diffusion_models": str(root / "diffusion_models")}

    def get_folder_paths(self, folder):
        return [self.roots[folder]]

    def get_filename_list(self, folder):
        root = self.roots[folder]
        return sorted(os.path.relpath(os.path.join(path, name), root).replace(os.sep, "/")
                      for path, _, names in os.walk(root) for name in names)

    def get_full_path(self, folder, name):
        path = os.path.join(self.roots.get(folder, ""), name)
        return path if os.path.isfile(path) else None


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    (root / "loras" / "hv15").mkdir(parents=True)
    model13, model15 = tiny_transformer(TEXT, POOLED, seed=1), tiny_transformer15(**DIMS15, seed=2)
    return dict(
        root=root,
        t2v=save_transformer(model13, root / "diffusion_models" / "hunyuan_video_t2v_720p_bf16.safetensors"),
        hv15=save_transformer15(model15, root / "diffusion_models" / "hunyuanvideo1.5_480p_t2v_fp16.safetensors"),
        style=_kohya_13b(root / "loras" / "style.safetensors", model13, 3),
        motion=_kohya_13b(root / "loras" / "motion.safetensors", model13, 4),
        style15=_comfy_15(root / "loras" / "hv15" / "style15.safetensors", model15, 5),
        motion15=_comfy_15(root / "loras" / "hv15" / "motion15.safetensors", model15, 6),
    )


@pytest.fixture(autouse=True)
def comfy(files, monkeypatch):
    monkeypatch.setattr(host, "_folder_paths", ComfyFolders(files["root"]))
    shared_lora._read_cache.clear()


def _merged(transformer, *loras):
    """The transformer with (deltas, strength, kept) merged into a copy of its weights by hand."""
    model = copy.deepcopy(transformer.model)
    with torch.no_grad():
        for deltas, strength, kept in loras:
            for target, delta in deltas.items():
                if kept(target):
                    model.get_submodule(target).weight += strength * delta
    return dataclasses.replace(transformer, model=model, loras=())


def _close(a, b, tol=1e-5):
    torch.testing.assert_close(a, b, rtol=0, atol=tol * max(1.0, b.abs().max().item()))


def _t2v(transformer):
    g = torch.Generator().manual_seed(1)
    positive = TextEmbeds(torch.randn(1, 6, TEXT, generator=g), torch.tensor([[1, 1, 1, 1, 1, 0]]),
                          torch.randn(1, POOLED, generator=g))
    return _node("HYVS_T2VSampler")(transformer, positive, 32, 32, 5, 2, 6.0, 1.0, 7.0, 3)[0]["samples"]


def test_the_nodes_inputs_and_registration(files):
    for node_id, (title, kind, category) in NODES.items():
        cls = NODE_CLASS_MAPPINGS[node_id]
        assert NODE_DISPLAY_NAME_MAPPINGS[node_id] == title and cls.CATEGORY == category
        assert cls.RETURN_TYPES == (kind,) and cls.RETURN_NAMES == ("transformer",) and cls.FUNCTION == "apply"
        spec = cls.INPUT_TYPES()
        required = spec["required"]
        assert list(required) == ["transformer", "lora", "strength", "block_filter"]
        assert required["transformer"][0] == kind
        assert required["lora"][0] == ["hv15/motion15.safetensors", "hv15/style15.safetensors", "motion.safetensors",
                                       "style.safetensors"]  # ComfyUI's loras folder
        assert {k: v for k, v in required["strength"][1].items() if k != "tooltip"} == {
            "default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01}
        assert required["block_filter"][0] == "STRING" and required["block_filter"][1]["default"] == ""
        assert all(value[1]["tooltip"] for value in required.values()) and spec["hidden"] == {"unique_id": "UNIQUE_ID"}
    tooltip13 = NODE_CLASS_MAPPINGS["HYVS_LoraLoader"].INPUT_TYPES()["required"]["block_filter"][1]["tooltip"]
    assert all(term in tooltip13 for term in ("'double'", "'single'", "'double:0-9,12'"))
    tooltip15 = NODE_CLASS_MAPPINGS["HYVS_HV15LoraLoader"].INPUT_TYPES()["required"]["block_filter"][1]["tooltip"]
    assert "double-stream blocks only" in tooltip15 and "'single' is refused" in tooltip15


def test_two_chained_13b_lora_nodes_give_the_hand_merged_model_and_the_loader_output_stays_the_base(files, monkeypatch):
    loaded = _node("HYVS_TransformerLoader")(str(files["t2v"]), "auto", "fp32")[0]
    base = _t2v(loaded)
    reads = []
    node = NODE_CLASS_MAPPINGS["HYVS_LoraLoader"]
    read = node.read_lora
    monkeypatch.setattr(node, "read_lora", staticmethod(lambda path: reads.append(path) or read(path)))
    styled = _node("HYVS_LoraLoader")(loaded, "style.safetensors", 0.8, "")[0]
    both = _node("HYVS_LoraLoader")(styled, "motion.safetensors", -0.5, " single ")[0]
    assert both.model is loaded.model and loaded.loras == () and len(styled.loras) == 1  # nothing reloaded or changed
    assert [(c.lora.name, c.strength, c.block_filter) for c in both.loras] == [
        ("style.safetensors", 0.8, ""), ("motion.safetensors", -0.5, "single")]
    single = lambda target: target.startswith("single_transformer_blocks.")  # noqa: E731
    reference = _t2v(_merged(loaded, (files["style"], 0.8, lambda t: True), (files["motion"], -0.5, single)))
    _close(_t2v(both), reference)
    side = loaded.model.transformer_blocks[0].attn.to_q.lora_side_path
    # a strength change re-runs the node: the file is not read again, and the sampler installs nothing again
    changed = _node("HYVS_LoraLoader")(styled, "motion.safetensors", 1.5, "single")[0]
    assert changed.loras[1].lora is both.loras[1].lora and len(reads) == 2
    reference = _t2v(_merged(loaded, (files["style"], 0.8, lambda t: True), (files["motion"], 1.5, single)))
    _close(_t2v(changed), reference)
    assert loaded.model.transformer_blocks[0].attn.to_q.lora_side_path is side
    # the loader's own output, a branch without LoRA nodes, samples the base model
    assert torch.equal(_t2v(loaded), base) and installed_loras(loaded.model) is None


def test_two_chained_15_lora_nodes_give_the_hand_merged_model(files):
    from hunyuan_video_suite.nodes.hunyuan_video_15 import loaders, sampler

    loaded = loaders.HYVSHV15TransformerLoader().load(str(files["hv15"]), "auto", "fp32")[0]
    g = torch.Generator().manual_seed(2)
    positive = TextEmbeds15(torch.randn(1, 10, 32, generator=g), torch.tensor([[1] * 7 + [0] * 3]),
                            torch.randn(1, 6, 24, generator=g), torch.tensor([[1, 1, 0, 0, 0, 0]]))

    def sample(transformer):
        return sampler.HYVSHV15Sampler().sample(transformer, positive, None, "custom", 64, 48, 5, 2, 1.0, 5.0, 4,
                                                "auto")[0]["samples"]

    chained = _node("HYVS_HV15LoraLoader")(loaded, "hv15/style15.safetensors", 1.2, "")[0]
    chained = _node("HYVS_HV15LoraLoader")(chained, "hv15/motion15.safetensors", 0.6, "double:1")[0]
    second = lambda target: target.startswith("transformer_blocks.1.")  # noqa: E731
    reference = sample(_merged(loaded, (files["style15"], 1.2, lambda t: True), (files["motion15"], 0.6, second)))
    _close(sample(chained), reference)


def test_refusals_name_the_input_before_any_work(files, monkeypatch):
    loaded13 = _node("HYVS_TransformerLoader")(str(files["t2v"]), "auto", "fp32")[0]
    from hunyuan_video_suite.nodes.hunyuan_video_15 import loaders

    loaded15 = loaders.HYVSHV15TransformerLoader().load(str(files["hv15"]), "auto", "fp32")[0]
    lora13, lora15 = _node("HYVS_LoraLoader"), _node("HYVS_HV15LoraLoader")
    with pytest.raises(ValueError, match=r"lora 'hv15/style15.safetensors' is not a HunyuanVideo 13B LoRA: "
                                         r"style15.safetensors does not fit .* other HunyuanVideo family"):
        lora13(loaded13, "hv15/style15.safetensors", 1.0, "")
    with pytest.raises(ValueError, match=r"lora 'style.safetensors' is not a HunyuanVideo 1.5 LoRA: style.safetensors"):
        lora15(loaded15, "style.safetensors", 1.0, "")
    with pytest.raises(ValueError, match=r"block_filter: block filter term 'doubles' not understood"):
        lora13(loaded13, "style.safetensors", 1.0, "doubles")
    with pytest.raises(ValueError, match=r"block_filter: block filter 'single': this model has no single blocks"):
        lora15(loaded15, "hv15/style15.safetensors", 1.0, "single")
    with pytest.raises(ValueError, match=r"block_filter: .* double block 4 does not exist"):
        lora13(loaded13, "style.safetensors", 1.0, "double:4")
    with pytest.raises(ValueError, match=r"lora 'gone.safetensors' is not a file in ComfyUI's models/loras folder"):
        lora13(loaded13, "gone.safetensors", 1.0, "")
    monkeypatch.setattr(shared_lora, "read_cached", lambda *args: pytest.fail("read before the inputs were checked"))
    with pytest.raises(ValueError, match=r"strength must be between -10 and 10, got 10.5"):
        lora13(loaded13, "gone.safetensors", 10.5, "")
    with pytest.raises(ValueError, match=r"block_filter: .*'double:9-2': range 9-2 runs backwards"):
        lora15(loaded15, "gone.safetensors", 1.0, "double:9-2")
    assert loaded13.loras == () and installed_loras(loaded13.model) is None


def test_widgets_are_checked_when_queued():
    for node_id in NODES:
        check = NODE_CLASS_MAPPINGS[node_id].VALIDATE_INPUTS
        assert check(strength=1.0, block_filter="") is True
        assert check(strength=-10.0, block_filter="double:0-4 single") is True
        assert check(strength=None, block_filter="double") is True  # linked: checked when it runs
        assert check(strength=10.01, block_filter="") == "strength must be at most 10.0, got 10.01"
        assert check(strength=-11.0, block_filter="") == "strength must be at least -10.0, got -11.0"
        assert check(strength=1.0, block_filter="double:x").startswith("block_filter: block filter term 'double:x'")
