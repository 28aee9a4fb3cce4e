"""LoRAs through every sampler: files written here in one convention each (kohya/musubi `lora_unet_*` with alpha for
13B, ComfyUI's fused-qkv names for 1.5, from this file's own name tables), carried in `transformer.loras`, give the
latents of a model whose weights were merged by hand: 13B T2V, I2V v2 and HunyuanCustom, 1.5 T2V, I2V and SR.
Two stacked LoRAs each with its own block filter; the same model object sampled afterwards without LoRAs is the
base; offloaded sampling streams the LoRA tensors and agrees; an fp8 plan after a LoRA run, the family refused,
keys not loaded reported, and a strength change through compiled blocks without a recompile."""

import copy
import dataclasses

import pytest
import torch
from hunyuan_video_suite.pipelines.demo.hv15_transformer import tiny_transformer15
from hunyuan_video_suite.pipelines.demo.hv15_upsampler import tiny_upsampler
from hunyuan_video_suite.pipelines.demo.tiny_transformer import tiny_transformer
from hunyuan_video_suite.pipelines.hunyuan_video_13b.custom import CustomConditioning, CustomRequest, generate_custom
from hunyuan_video_suite.pipelines.hunyuan_video_13b.i2v import I2VConditioning, I2VRequest, generate_i2v
from hunyuan_video_suite.pipelines.hunyuan_video_13b.lora_keys import read_lora as read_lora_13b
from hunyuan_video_suite.pipelines.hunyuan_video_13b.prompt_encoding import TextEmbeds
from hunyuan_video_suite.pipelines.hunyuan_video_13b.t2v import T2VRequest, generate_t2v
from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import LoadedTransformer
from hunyuan_video_suite.pipelines.hunyuan_video_15.lora_keys import read_lora as read_lora_15
from hunyuan_video_suite.pipelines.hunyuan_video_15.sampling import ImageCondition15, Request15, generate
from hunyuan_video_suite.pipelines.hunyuan_video_15.super_resolution import SRRequest, generate_sr
from hunyuan_video_suite.pipelines.hunyuan_video_15.text_embeds import TextEmbeds15
from hunyuan_video_suite.pipelines.hunyuan_video_15.transformer_loading import LoadedTransformer15, keep_timesteps_exact
from hunyuan_video_suite.pipelines.hunyuan_video_15.variants import Variant
from hunyuan_video_suite.pipelines.lora.apply import LoraChoice, installed_loras, remove_loras
from hunyuan_video_suite.pipelines.lora.fit import LoraMismatchError
from hunyuan_video_suite.pipelines.lora.side_path import LoraSidePath
from hunyuan_video_suite.pipelines.memory import offload
from hunyuan_video_suite.pipelines.memory.sampling_memory import transformer_on_device
from hunyuan_video_suite.pipelines.memory.vram_planner import Plan
from hunyuan_video_suite.pipelines.speed.compile import set_compiled
from hunyuan_video_suite.pipelines.speed.options import SpeedOptions
from hunyuan_video_suite.pipelines.weights.fp8_linear import ScaledFp8Linear, dequantize_fp8
from safetensors.torch import save_file
from torch import nn

TEXT, POOLED, RANK = 24, 12, 4
DIMS15 = dict(text_dim=32, byt5_dim=24, image_dim=1152)


# ----------------------------------------------------------------------------- LoRA files, written here


def _modules_13b(model):
    """The authors' module names of the tiny 13B model's blocks, (out, in), and where their rows land in diffusers'
    model (this file's own table: q, k, v and the single blocks' mlp rows in that order)."""
    h = model.config.num_attention_heads * model.config.attention_head_dim
    mlp = model.single_transformer_blocks[0].proj_mlp.out_features
    d, s = "transformer_blocks.0.", "single_transformer_blocks.0."
    rows = lambda *names: [(n, slice(i * h, (i + 1) * h)) for i, n in enumerate(names)]  # noqa: E731
    return {
        "double_blocks.0.img_attn_qkv": ((3 * h, h), rows(d + "attn.to_q", d + "attn.to_k", d + "attn.to_v")),
        "double_blocks.0.txt_attn_proj": ((h, h), [(d + "attn.to_add_out", slice(None))]),
        "double_blocks.0.img_mlp.fc1": ((mlp, h), [(d + "ff.net.0.proj", slice(None))]),
        "double_blocks.0.img_mod.linear": ((6 * h, h), [(d + "norm1.linear", slice(None))]),
        "single_blocks.0.linear1": ((3 * h + mlp, h), rows(s + "attn.to_q", s + "attn.to_k", s + "attn.to_v")
                                    + [(s + "proj_mlp", slice(3 * h, None))]),
        "single_blocks.0.linear2": ((h, h + mlp), [(s + "proj_out", slice(None))]),
    }


def _random(shape, gen, scale=0.3):
    return torch.randn(*shape, generator=gen) * scale


def _kohya_file(path, model, seed, extra_keys=False):
    """A musubi/kohya file (`lora_unet_<name>`, lora_down/up, alpha); returns {diffusers target: dense delta}."""
    gen = torch.Generator().manual_seed(seed)
    state, deltas = {}, {}
    for n, (name, ((out, inn), rows)) in enumerate(_modules_13b(model).items()):
        down, up, alpha = _random((RANK, inn), gen), _random((out, RANK), gen), 2.0 + n
        key = "lora_unet_" + name.replace(".", "_")
        state.update({f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up,
                      f"{key}.alpha": torch.tensor(alpha)})
        full = alpha / RANK * up @ down
        deltas.update({target: full[part] for target, part in rows})
    if extra_keys:  # a text-encoder module (no module of the transformer) and a target of the wrong shape
        state["lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"] = torch.ones(RANK, 8)
        state["lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"] = torch.ones(8, RANK)
        h = model.config.num_attention_heads * model.config.attention_head_dim
        state["lora_unet_double_blocks_0_img_attn_proj.lora_down.weight"] = torch.ones(RANK, h + 3)
        state["lora_unet_double_blocks_0_img_attn_proj.lora_up.weight"] = torch.ones(h, RANK)
    save_file(state, str(path))
    return deltas


def _comfy_file_15(path, model, seed):
    """A ComfyUI-named 1.5 file as musubi's converter writes it (img_attn.qkv fused: down = cat(A_q, A_k, A_v), up
    block-diagonal, alpha x 3; img_mlp.0, img_mod.lin); returns {diffusers target: dense delta}."""
    gen = torch.Generator().manual_seed(seed)
    state, deltas = {}, {}
    for i, block in enumerate(model.transformer_blocks):
        d, key = f"transformer_blocks.{i}.", f"diffusion_model.double_blocks.{i}."
        alpha = 1.5 + i
        width = block.attn.to_q.in_features
        parts = [(d + t, _random((RANK, width), gen), _random((width, RANK), gen))
                 for t in ("attn.to_q", "attn.to_k", "attn.to_v")]
        state[key + "img_attn.qkv.lora_down.weight"] = torch.cat([down for _, down, _ in parts])
        state[key + "img_attn.qkv.lora_up.weight"] = torch.block_diag(*[up for _, _, up in parts])
        state[key + "img_attn.qkv.alpha"] = torch.tensor(3 * alpha)
        deltas.update({target: alpha / RANK * up @ down for target, down, up in parts})
        for name, target in (("img_mlp.0", "ff.net.0.proj"), ("txt_attn.proj", "attn.to_add_out"),
                             ("img_mod.lin", "norm1.linear")):
            layer = model.get_submodule(d + target)
            down, up = _random((RANK, layer.in_features), gen), _random((layer.out_features, RANK), gen)
            state.update({f"{key}{name}.lora_down.weight": down, f"{key}{name}.lora_up.weight": up,
                          f"{key}{name}.alpha": torch.tensor(alpha)})
            deltas[d + target] = alpha / RANK * up @ down
    save_file(state, str(path))
    return deltas


def _merged(model, *loras):
    """A copy with (deltas, strength, kept) merged into float32 weights by hand; `kept(target)` says which targets a
    LoRA's block filter leaves it. fp8 layers become dequantized nn.Linear."""
    merged = copy.deepcopy(model)
    remove_loras(merged)
    for name, layer in list(merged.named_modules()):
        if isinstance(layer, ScaledFp8Linear):
            plain = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
            plain.weight.data = dequantize_fp8(layer.weight, layer.scale_weight, torch.float32)
            if layer.bias is not None:
                plain.bias.data = layer.bias.data.float()
            parent, _, child = name.rpartition(".")
            setattr(merged.get_submodule(parent), child, plain)
    with torch.no_grad():
        for deltas, strength, kept in loras:
            for target, delta in deltas.items():
                if kept(target):
                    merged.get_submodule(target).weight += strength * delta
    return merged


def _every(target):
    return True


def _double(target):
    return target.startswith("transformer_blocks.")


def _close(a, b, tol=1e-5):
    torch.testing.assert_close(a, b, rtol=0, atol=tol * max(1.0, b.abs().max().item()))


@pytest.fixture(scope="module")
def files13(tmp_path_factory):
    root = tmp_path_factory.mktemp("loras13")
    model = tiny_transformer(TEXT, POOLED)
    style = _kohya_file(root / "style.safetensors", model, 1, extra_keys=True)
    motion = _kohya_file(root / "motion.safetensors", model, 2)
    return dict(style=read_lora_13b(root / "style.safetensors"), motion=read_lora_13b(root / "motion.safetensors"),
                style_deltas=style, motion_deltas=motion, root=root)


@pytest.fixture(scope="module")
def files15(tmp_path_factory):
    root = tmp_path_factory.mktemp("loras15")
    model = tiny_transformer15(**DIMS15, layers=2)
    style = _comfy_file_15(root / "style15.safetensors", model, 3)
    motion = _comfy_file_15(root / "motion15.safetensors", model, 4)
    return dict(style=read_lora_15(root / "style15.safetensors"), motion=read_lora_15(root / "motion15.safetensors"),
                style_deltas=style, motion_deltas=motion, root=root)


# ----------------------------------------------------------------------------- 13B


def _embeds13(seed=1):
    g = torch.Generator().manual_seed(seed)
    return TextEmbeds(torch.randn(1, 6, TEXT, generator=g), torch.tensor([[1, 1, 1, 1, 0, 0]]),
                      torch.randn(1, POOLED, generator=g))


def _t2v(transformer, plan=None, info=None):
    with transformer_on_device(transformer, "cpu", plan) as device:
        return generate_t2v(transformer, _embeds13(), T2VRequest(width=32, height=32, num_frames=5, steps=2, seed=4),
                            device=device, on_info=info.append if info is not None else None)


def _stacked(files, style=0.8, motion=-0.6):
    """Style on every block, motion on the double blocks only."""
    return (LoraChoice(files["style"], style), LoraChoice(files["motion"], motion, "double"))


def _reference13(model, files, style=0.8, motion=-0.6):
    return _merged(model, (files["style_deltas"], style, _every), (files["motion_deltas"], motion, _double))


def _plan(model, resident=None, quantize=False):
    blocks = len(model.transformer_blocks) + len(getattr(model, "single_transformer_blocks", ()))
    return Plan(resident_blocks=blocks if resident is None else resident, total_blocks=blocks, fp8_storage=quantize,
                quantize=quantize, chunk_tokens=None, decode_tile=256, decode_tile_frames=16, sampling_bytes=0,
                decode_bytes=0, free_bytes=0)


def test_13b_t2v_with_two_filtered_loras_equals_the_hand_merged_model_then_the_base(files13):
    model = tiny_transformer(TEXT, POOLED)
    base = _t2v(LoadedTransformer(model=model, variant="t2v", source="tiny"))
    reference = _t2v(LoadedTransformer(model=_reference13(model, files13), variant="t2v", source="tiny"))
    info = []
    with_loras = LoadedTransformer(model=model, variant="t2v", source="tiny", loras=_stacked(files13))
    latents = _t2v(with_loras, info=info)
    _close(latents, reference)
    assert (latents - base).abs().max() > 0.05
    applied = installed_loras(model)
    assert applied.layers == [11, 6]  # motion: the 6 double-block targets of its 11
    assert "LoRA: style.safetensors x0.8 (11 layers), motion.safetensors x-0.6 (6 layers; blocks double)" in info[0]
    # what the file holds beyond the model, reported as ComfyUI's "lora key not loaded" and the skipped target
    assert "2 LoRA keys not loaded (style.safetensors: lora_te1_text_model_encoder_layers_0_mlp_fc1" in info[0]
    skipped = "transformer_blocks.0.attn.to_out.0: LoRA shape (20, 23), the model's (20, 20)"
    assert f"1 target skipped (style.safetensors: {skipped})" in info[0]
    # a ComfyUI branch without the LoRA nodes shares the model object: it samples the base model
    assert torch.equal(_t2v(LoadedTransformer(model=model, variant="t2v", source="tiny")), base)
    assert installed_loras(model) is None and not any(isinstance(m, LoraSidePath) for m in model.modules())


def test_13b_offloaded_run_streams_the_lora_tensors_and_agrees(files13, monkeypatch):
    model = tiny_transformer(TEXT, POOLED)
    transformer = LoadedTransformer(model=model, variant="t2v", source="tiny", loras=_stacked(files13))
    resident = _t2v(transformer)
    side = model.transformer_blocks[0].attn.to_q.lora_side_path
    owners, original = set(), offload.BlockOffloader.attach

    def attach(self):
        original(self)
        owners.update(type(owner) for entry in self._offloaded for owner, *_ in entry.entries)
        return self

    monkeypatch.setattr(offload.BlockOffloader, "attach", attach)
    streamed = _t2v(transformer, plan=_plan(model, resident=0))
    assert LoraSidePath in owners  # installed before the offloader attached, so streamed with their blocks
    assert torch.equal(streamed, resident)
    assert model.transformer_blocks[0].attn.to_q.lora_side_path is side  # the same LoRAs: not installed again


def test_an_fp8_plan_after_a_lora_run_puts_the_loras_on_the_fp8_layers(files13):
    model = tiny_transformer(TEXT, POOLED)
    transformer = LoadedTransformer(model=model, variant="t2v", source="tiny", loras=_stacked(files13))
    _t2v(transformer)
    latents = _t2v(transformer, plan=_plan(model, quantize=True))  # the plan quantizes the block linears
    layer = model.transformer_blocks[0].attn.to_q
    assert isinstance(layer, ScaledFp8Linear) and isinstance(layer.lora_side_path, LoraSidePath)
    reference = _t2v(LoadedTransformer(model=_reference13(model, files13), variant="t2v", source="tiny"))
    _close(latents, reference)


def test_13b_image_samplers_with_loras_equal_the_hand_merged_model(files13):
    g = torch.Generator().manual_seed(7)
    i2v_model = tiny_transformer(TEXT, POOLED, variant="i2v_v2")
    custom_model = tiny_transformer(TEXT, POOLED, variant="custom")
    i2v = I2VConditioning("i2v_v2", _embeds13(2), None, torch.randn(1, 16, 1, 4, 4, generator=g), 32, 32)
    custom = CustomConditioning(_embeds13(3), _embeds13(4), torch.randn(1, 32, 1, 4, 4, generator=g),
                                torch.randn(1, 32, 1, 4, 4, generator=g), 32, 32)

    def run(model, variant, loras=()):
        transformer = LoadedTransformer(model=model, variant=variant, source="tiny", loras=loras)
        with transformer_on_device(transformer, "cpu", None):
            if variant == "custom":
                return generate_custom(transformer, custom, CustomRequest(num_frames=5, steps=2, seed=3, cfg=2.0))
            return generate_i2v(transformer, i2v, I2VRequest(num_frames=5, steps=2, seed=3))["samples"]

    for model, variant in ((i2v_model, "i2v_v2"), (custom_model, "custom")):
        reference = run(_reference13(model, files13), variant)
        _close(run(model, variant, _stacked(files13)), reference)


def test_a_lora_of_the_other_family_is_refused_before_the_first_model_call(files13, files15):
    model = tiny_transformer(TEXT, POOLED)
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(1))
    wrong = LoadedTransformer(model=model, variant="t2v", source="tiny", loras=(LoraChoice(files15["style"]),))
    with pytest.raises(ValueError, match="style15.safetensors is for HunyuanVideo 1.5, not for this HunyuanVideo 13B"):
        generate_t2v(wrong, _embeds13(), T2VRequest(width=32, height=32, num_frames=5, steps=1))
    # the 1.5 file read as a 13B LoRA (what the 13B LoRA node reads): none of its modules fits
    misread = read_lora_13b(files15["root"] / "style15.safetensors")
    wrong = dataclasses.replace(wrong, loras=(LoraChoice(files13["style"]), LoraChoice(misread)))
    with pytest.raises(LoraMismatchError, match="style15.safetensors does not fit .* other HunyuanVideo family"):
        _t2v(wrong)
    assert not calls and installed_loras(model) is None


def test_a_strength_change_through_compiled_blocks_does_not_recompile(files13, monkeypatch):
    compile_module = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self: compile_module(self, backend="eager"))
    torch._dynamo.reset()
    model = tiny_transformer(TEXT, POOLED)
    references = [_t2v(LoadedTransformer(model=_reference13(model, files13, s, -s), variant="t2v", source="tiny"))
                  for s in (0.8, 0.3)]
    transformer = LoadedTransformer(model=model, variant="t2v", source="tiny", speed=SpeedOptions(compile=True),
                                    loras=_stacked(files13, 0.8, -0.8))
    try:
        _close(_t2v(transformer), references[0], 1e-4)
        with torch._dynamo.config.patch(error_on_recompile=True):
            _close(_t2v(dataclasses.replace(transformer, loras=_stacked(files13, 0.3, -0.3))), references[1], 1e-4)
    finally:
        set_compiled(model, False)
        torch._dynamo.reset()


# ----------------------------------------------------------------------------- 1.5


def _embeds15(valid, seed):
    g = torch.Generator().manual_seed(seed)
    return TextEmbeds15(torch.randn(1, 10, 32, generator=g), torch.tensor([[1] * valid + [0] * (10 - valid)]),
                        torch.randn(1, 6, 24, generator=g), torch.tensor([[1, 1, 0, 0, 0, 0]]))


def _model15(seed, **kwargs):
    model = tiny_transformer15(**DIMS15, seed=seed, **kwargs)
    keep_timesteps_exact(model)
    return model


def _stacked15(files, style=1.1, motion=0.7):
    return (LoraChoice(files["style"], style), LoraChoice(files["motion"], motion, "double:1"))


def _reference15(model, files):
    return _merged(model, (files["style_deltas"], 1.1, _every),
                   (files["motion_deltas"], 0.7, lambda t: t.startswith("transformer_blocks.1.")))


@pytest.mark.parametrize("variant", ["480p_t2v", "480p_i2v"])
def test_15_sampler_with_two_filtered_loras_equals_the_hand_merged_model_then_the_base(files15, variant):
    model = _model15(1, layers=2)
    g = torch.Generator().manual_seed(5)
    image = ImageCondition15(torch.randn(1, 32, 1, 3, 4, generator=g), torch.randn(1, 729, 1152, generator=g), 64, 48,
                             "480p") if variant.endswith("i2v") else None

    def run(model, loras=(), plan=None, info=None):
        transformer = LoadedTransformer15(model=model, variant=Variant(variant), source="tiny", loras=loras)
        with transformer_on_device(transformer, "cpu", plan) as device:
            return generate(transformer, _embeds15(7, 1), None,
                            Request15(width=64, height=48, num_frames=5, steps=2, cfg=1.0, flow_shift=5.0, seed=2),
                            image, device=device, on_info=info.append if info is not None else None)

    base, reference = run(model), run(_reference15(model, files15))
    info = []
    latents = run(model, _stacked15(files15), info=info)
    _close(latents, reference)
    assert "motion15.safetensors x0.7 (6 layers; blocks double:1)" in info[0]
    assert torch.equal(run(model, _stacked15(files15), plan=_plan(model, resident=0)), latents)  # offloaded
    assert torch.equal(run(model), base)


def test_15_super_resolution_with_loras_equals_the_hand_merged_model(files15):
    model, upsampler = _model15(3, sr=True, layers=2), tiny_upsampler("720p", seed=2)
    latents = torch.randn(1, 32, 1, 480 // 16, 848 // 16, generator=torch.Generator().manual_seed(5))

    def run(model, loras=()):
        transformer = LoadedTransformer15(model=model, variant=Variant("720p_sr_distilled"), source="tiny", loras=loras)
        with transformer_on_device(transformer, "cpu", None) as device:
            return generate_sr(transformer, upsampler, _embeds15(7, 1), latents,
                               SRRequest(steps=2, flow_shift=2.0, noise_augmentation=0.7, seed=1), device=device)

    _close(run(model, _stacked15(files15)), run(_reference15(model, files15)))


def test_installing_new_loras_while_blocks_are_streamed_is_refused(files13):
    from hunyuan_video_suite.pipelines.lora.run import loras_for_run

    model = tiny_transformer(TEXT, POOLED)
    model.single_transformer_blocks.to("meta")  # as an attached offloader leaves them: at home, the rest elsewhere
    transformer = LoadedTransformer(model=model, variant="t2v", source="tiny", loras=_stacked(files13))
    with pytest.raises(RuntimeError, match="LoRAs must be installed before a block offloader attaches"):
        loras_for_run(transformer)
    assert installed_loras(model) is None


def test_the_vram_planner_counts_the_lora_tensors_with_their_blocks(files13):
    from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import BLOCK_CONTAINERS
    from hunyuan_video_suite.pipelines.memory.sampling_memory import plan_sampling
    from hunyuan_video_suite.pipelines.memory.vram_planner import ModelFacts

    model = tiny_transformer(TEXT, POOLED)
    before = ModelFacts.from_model(model, BLOCK_CONTAINERS).block_bytes
    transformer = LoadedTransformer(model=model, variant="t2v", source="tiny", loras=_stacked(files13))
    plan_sampling(transformer, 32, 32, 5, 1, "cpu", free=64 * 1024**3)  # a GPU's free memory, given
    after = ModelFacts.from_model(model, BLOCK_CONTAINERS).block_bytes
    assert installed_loras(model) is not None and all(a > b for a, b in zip(after, before))
