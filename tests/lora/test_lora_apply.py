"""LoRAs applied (added at each call on the side path or to the weight, or merged) equal the weights merged by hand,
on fp32, bf16 and fp8 layers, stacked, filtered, offloaded, compiled and through the 13B and 1.5 samplers;
strengths change in place and removal is exact."""

import copy

import pytest
import torch
from hunyuan_video_suite.pipelines.demo.hv15_transformer import tiny_transformer15
from hunyuan_video_suite.pipelines.demo.tiny_transformer import tiny_transformer
from hunyuan_video_suite.pipelines.hunyuan_video_13b.prompt_encoding import TextEmbeds
from hunyuan_video_suite.pipelines.hunyuan_video_13b.t2v import T2VRequest, generate_t2v
from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import BLOCK_CONTAINERS, LoadedTransformer
from hunyuan_video_suite.pipelines.hunyuan_video_15.sampling import Request15, generate
from hunyuan_video_suite.pipelines.hunyuan_video_15.text_embeds import TextEmbeds15
from hunyuan_video_suite.pipelines.hunyuan_video_15.transformer_loading import LoadedTransformer15, keep_timesteps_exact
from hunyuan_video_suite.pipelines.hunyuan_video_15.variants import Variant
from hunyuan_video_suite.pipelines.lora.apply import LoraChoice, apply_loras, installed_loras, remove_loras
from hunyuan_video_suite.pipelines.lora.block_filter import parse_block_filter
from hunyuan_video_suite.pipelines.lora.lowrank import LoraWeights, LowRank
from hunyuan_video_suite.pipelines.lora.side_path import LoraSidePath
from hunyuan_video_suite.pipelines.memory.offload import BlockOffloader, model_on_device
from hunyuan_video_suite.pipelines.speed.compile import set_compiled
from hunyuan_video_suite.pipelines.weights.fp8_linear import (
    ScaledFp8Linear,
    dequantize_fp8,
    quantize_linears,
    set_fp8_compute,
)
from torch import nn

TEXT, POOLED = 24, 12
FAMILY = "hunyuan_video_13b"


def _model13(fp8=False):
    model = tiny_transformer(TEXT, POOLED)
    if fp8:
        names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.startswith(BLOCK_CONTAINERS)]
        quantize_linears(model, names, torch.float32)
    return model


def _linears(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, ScaledFp8Linear))}


def _lora(model, seed, rank=4, name="style", only=None, extras=False, family=FAMILY):
    """A random LoRA on every linear layer of `model` (or those whose name starts with `only`); `extras` adds a
    bias delta and a dense-only target, as ComfyUI's diff_b / diff keys give."""
    g = torch.Generator().manual_seed(seed)
    targets = {}
    for target, layer in _linears(model).items():
        if only and not target.startswith(only):
            continue
        down = torch.randn(rank, layer.in_features, generator=g) * 0.2
        up = torch.randn(layer.out_features, rank, generator=g) * 0.2
        targets[target] = LowRank(down, up, scale=8.0 / rank)
    if extras:
        first, last = sorted(targets)[0], sorted(targets)[-1]
        targets[first].bias = torch.randn(targets[first].up.shape[0], generator=g) * 0.1
        shape = (targets[last].up.shape[0], targets[last].down.shape[1])
        targets[last] = LowRank(None, None, weight=torch.randn(shape, generator=g) * 0.05)
    return LoraWeights(name, family, targets)


def _merged(model, loras):
    """A copy with every delta merged into float32 weights by hand (fp8 layers become dequantized nn.Linear)."""
    merged = copy.deepcopy(model)
    for name, layer in _linears(merged).items():
        if isinstance(layer, ScaledFp8Linear):
            plain = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
            plain.weight.data = dequantize_fp8(layer.weight, layer.scale_weight, torch.float32)
            if layer.bias is not None:
                plain.bias.data = layer.bias.data.float()
            parent, _, child = name.rpartition(".")
            setattr(merged.get_submodule(parent) if parent else merged, child, plain)
    with torch.no_grad():
        for lora, strength in loras:
            for name, delta in lora.targets.items():
                layer = merged.get_submodule(name)
                layer.weight += strength * delta.delta()
                if delta.bias is not None:
                    layer.bias += strength * delta.bias
    return merged


def _inputs(seed=3):
    g = torch.Generator().manual_seed(seed)
    return dict(hidden_states=torch.randn(1, 16, 2, 8, 8, generator=g), timestep=torch.tensor([700.0]),
                encoder_hidden_states=torch.randn(1, 6, TEXT, generator=g), encoder_attention_mask=torch.ones(1, 6),
                pooled_projections=torch.randn(1, POOLED, generator=g), guidance=torch.tensor([6000.0]))


def _call(model, inputs=None):
    with torch.no_grad():
        return model(**(inputs or _inputs()), return_dict=False)[0]


def _close(a, b, tol=1e-5):
    """Equal to `tol` of the output's scale: the random tiny models' outputs reach about 10, so float32
    summation order alone moves single values by ~1e-5 between the side path and the merged matmul."""
    torch.testing.assert_close(a, b, rtol=0, atol=tol * max(1.0, b.abs().max().item()))


@pytest.mark.parametrize("fp8", [False, True])
def test_loras_applied_equal_the_hand_merged_weights(fp8):
    model = _model13(fp8)
    lora = _lora(model, 1, extras=True)
    base, reference = _call(model), _call(_merged(model, [(lora, 0.8)]))
    applied = apply_loras(model, [(lora, 0.8)], family=FAMILY)
    assert applied.layers == [len(lora.targets)] and not applied.skipped
    out = _call(model)
    assert (out - base).abs().max() > 0.05  # the LoRA visibly changes the output
    _close(out, reference)


def _unapplied(model):
    copy_ = copy.deepcopy(model)
    remove_loras(copy_)
    return copy_


@pytest.mark.parametrize("fp8", [False, True])
@pytest.mark.parametrize("rows", [2, 64])
def test_both_ways_of_adding_the_delta_equal_the_dequantized_weight_plus_the_delta(fp8, rows):
    """Few rows take the side path, many the weight patch (ff.net.0.proj, 20 -> 80: the patch from 17 rows on)."""
    model = _model13(fp8)
    name = "transformer_blocks.0.ff.net.0.proj"
    layer = model.get_submodule(name)
    lora = _lora(model, 2, only=name)
    lora.targets[name].bias = torch.linspace(-1.0, 1.0, layer.out_features)  # a low-rank and a bias delta
    apply_loras(model, [(lora, 1.5)])
    side = layer.lora_side_path
    assert side.down.dtype == side.up.dtype == side.strength.dtype == torch.float32
    x = torch.randn(rows, layer.in_features, generator=torch.Generator().manual_seed(0))
    assert side.prefers_weight(x) == (rows == 64)
    weight = layer.weight if not fp8 else dequantize_fp8(layer.weight, layer.scale_weight, torch.float32)
    weight = weight + 1.5 * lora.targets[name].delta()
    with torch.no_grad():
        _close(layer(x), x @ weight.T + layer.bias + 1.5 * lora.targets[name].bias)


def test_with_fp8_matmuls_the_delta_rides_on_the_side_in_the_compute_dtype():
    model = _model13(fp8=True)
    name = "transformer_blocks.0.ff.net.0.proj"
    layer = model.get_submodule(name)
    set_fp8_compute(model, True)  # forced: torch runs _scaled_mm on the CPU too
    x = torch.randn(64, layer.in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = layer(x)
        lora = _lora(model, 2, only=name)
        apply_loras(model, [(lora, 1.5)])
        delta = layer(x) - base
    _close(delta, 1.5 * x @ lora.targets[name].delta().T)


def test_strength_zero_is_the_base_and_a_layer_is_linear_in_the_strength():
    model = _model13()
    base = _call(model)
    lora = _lora(model, 3)
    applied = apply_loras(model, [(lora, 0.0)])
    assert torch.equal(_call(model), base)
    layer = model.transformer_blocks[0].ff.net[2]
    x = torch.randn(5, layer.in_features, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = nn.functional.linear(x, layer.weight, layer.bias)
        applied.set_strength(0, 1.0)
        full = layer(x) - plain
        applied.set_strength(0, 0.5)
        half = layer(x) - plain
    _close(half, 0.5 * full, 1e-6)
    _close(_call(model), _call(_merged(_unapplied(model), [(lora, 0.5)])))


@pytest.mark.parametrize("fp8", [False, True])
def test_two_loras_add_each_with_its_strength(fp8):
    model = _model13(fp8)
    style = _lora(model, 4, rank=4, extras=True)
    motion = _lora(model, 5, rank=2, name="motion", only="single_transformer_blocks")
    reference = _merged(model, [(style, 0.7), (motion, -1.2)])
    applied = apply_loras(model, [(style, 0.7), (motion, -1.2)])
    assert applied.layers == [len(style.targets), len(motion.targets)]
    _close(_call(model), _call(reference))
    assert "style x0.7" in applied.summary() and "motion x-1.2" in applied.summary()


def test_apply_change_remove_returns_the_base_exactly_and_never_touches_the_weights():
    model = _model13()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    base = _call(model)
    style, motion = _lora(model, 6), _lora(model, 7, name="motion")
    applied = apply_loras(model, [(style, 1.0), (motion, 0.3)])
    assert model.state_dict().keys() == state.keys()  # side paths are not part of the checkpoint
    for strength in (0.2, 1.7, -0.4, 1.0):
        applied.set_strength(0, strength)
    apply_loras(model, [(style, 1.0), (motion, 0.3)])
    _close(_call(model), _call(_merged(_unapplied(model), [(style, 1.0), (motion, 0.3)])))
    remove_loras(model)
    assert torch.equal(_call(model), base) and installed_loras(model) is None
    assert not any(isinstance(m, LoraSidePath) for m in model.modules())
    assert all(type(layer) in (nn.Linear, ScaledFp8Linear) for layer in _linears(model).values())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_applying_the_same_list_again_updates_strengths_and_a_new_list_replaces_the_old():
    model = _model13()
    style, motion = _lora(model, 8), _lora(model, 9, name="motion")
    first = apply_loras(model, [(style, 1.0)])
    side = model.transformer_blocks[0].attn.to_k.lora_side_path
    again = apply_loras(model, [(style, 0.6)])
    assert again is first and model.transformer_blocks[0].attn.to_k.lora_side_path is side  # no reinstall
    _close(_call(model), _call(_merged(_unapplied(model), [(style, 0.6)])))
    apply_loras(model, [(motion, 1.0)])
    _close(_call(model), _call(_merged(_unapplied(model), [(motion, 1.0)])))


def test_strengths_change_inside_inference_mode_as_comfyui_runs_nodes():
    model = _model13()
    lora = _lora(model, 10)
    with torch.inference_mode():
        applied = apply_loras(model, [(lora, 1.0)])
        applied.set_strengths([0.25])
        out = model(**_inputs(), return_dict=False)[0]
    _close(out, _call(_merged(_unapplied(model), [(lora, 0.25)])))
    applied.set_strengths([-0.5])  # and outside it, on the inference tensors made inside
    _close(_call(model), _call(_merged(_unapplied(model), [(lora, -0.5)])))


def test_a_block_filter_keeps_only_the_named_blocks():
    model = tiny_transformer15(32, 24, 1152, layers=3)
    lora = _lora(model, 11, family="hunyuan_video_15")
    applied = apply_loras(model, [(lora, 1.0)], block_filter="double:0,2")
    kept = {n: d for n, d in lora.targets.items() if n.startswith(("transformer_blocks.0.", "transformer_blocks.2."))}
    assert set(applied.side_paths) == set(kept) and applied.layers == [len(kept)]
    assert "blocks double:0,2" in applied.summary()
    with pytest.raises(ValueError, match="this model has no single blocks"):
        apply_loras(model, [(lora, 1.0)], block_filter="single")
    with pytest.raises(ValueError, match="double block 3 does not exist .the model has 3: 0-2"):
        apply_loras(model, [(lora, 1.0)], block_filter="double:1-3")


def test_block_filter_text():
    both = parse_block_filter("double:0-2,7;single:4  double:9")
    assert both.allows("transformer_blocks.7.attn.to_q") and both.allows("transformer_blocks.9.ff.net.2")
    assert not both.allows("transformer_blocks.3.attn.to_q") and both.allows("single_transformer_blocks.4.proj_out")
    assert not both.allows("single_transformer_blocks.5.proj_out") and not both.allows("proj_out")
    assert parse_block_filter("double").allows("transformer_blocks.19.norm1.linear")
    assert parse_block_filter("") is None and parse_block_filter(" All ") is None and parse_block_filter(None) is None
    bad_filters = (("doubles", "not understood"), ("double:3-1", "runs backwards"), ("double:1-2-3", "not an index"))
    for bad, message in bad_filters:
        with pytest.raises(ValueError, match=message):
            parse_block_filter(bad)


def test_targets_that_do_not_fit_are_skipped_by_name_and_the_rest_applied():
    model = _model13()
    lora = _lora(model, 12, only="transformer_blocks.0.attn")
    hidden = model.config.num_attention_heads * model.config.attention_head_dim
    lora.targets["transformer_blocks.7.attn.to_q"] = LowRank(torch.ones(2, hidden), torch.ones(hidden, 2))
    lora.targets["x_embedder.proj"] = LowRank(None, None, weight=torch.ones(hidden, 64))
    lora.targets["transformer_blocks.0.norm1.linear"] = LowRank(torch.ones(2, hidden + 1), torch.ones(6 * hidden, 2))
    applied = apply_loras(model, [(lora, 1.0)])
    assert applied.layers == [len(lora.targets) - 3] and len(applied.skipped) == 3
    reasons = " | ".join(applied.skipped)
    assert "transformer_blocks.7.attn.to_q: the model has no such module" in reasons
    assert "x_embedder.proj: a Conv3d, not a linear layer" in reasons
    assert "norm1.linear: LoRA shape (120, 21), the model's (120, 20)" in reasons


def test_a_lora_of_the_other_family_is_refused_before_anything_changes():
    model = _model13()
    with pytest.raises(ValueError, match="LoRA hv15 is for hunyuan_video_15, not for this hunyuan_video_13b model"):
        apply_loras(model, [(_lora(model, 13, name="hv15", family="hunyuan_video_15"), 1.0)], family=FAMILY)
    assert installed_loras(model) is None and not any(isinstance(m, LoraSidePath) for m in model.modules())


def test_side_paths_travel_with_their_block_and_offloaded_runs_agree():
    model = _model13(fp8=True)
    lora = _lora(model, 14, extras=True)
    apply_loras(model, [(lora, 0.9)])
    resident = _call(model)
    offloader = BlockOffloader(model, BLOCK_CONTAINERS, "cpu", resident=0).attach()
    owners = {type(owner) for entry in offloader._offloaded for owner, *_ in entry.entries}
    assert LoraSidePath in owners  # the offloader copies the LoRA tensors in with their block
    streamed = _call(model)
    offloader.detach()
    assert offloader.onload_count == 2
    assert torch.equal(streamed, resident)
    on_meta = copy.deepcopy(model).to("meta")  # module.to moves them too
    assert all(t.device.type == "meta" for m in on_meta.modules() if isinstance(m, LoraSidePath)
               for t in m.buffers())


def test_a_strength_change_on_compiled_blocks_is_right_and_does_not_recompile(monkeypatch):
    """The pack's regional compile, with dynamo's eager backend: what is traced and guarded is the same as with
    inductor (a stale graph would miss the LoRA just as well), at a fraction of the compile time."""
    compile_module = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self: compile_module(self, backend="eager"))
    torch._dynamo.reset()
    model = _model13()
    style, motion = _lora(model, 15), _lora(model, 19, rank=3, name="motion", only="single", extras=True)
    full, half = (_call(_merged(model, [(style, s)])) for s in (1.0, 0.5))
    other = _call(_merged(model, [(motion, 1.0)]))  # eager copies, made before compiling
    set_compiled(model, True)
    base = _call(model)
    applied = apply_loras(model, [(style, 1.0)])  # after compiling: the new hooks are seen
    _close(_call(model), full, 1e-4)
    with torch._dynamo.config.patch(error_on_recompile=True):
        applied.set_strength(0, 0.5)
        _close(_call(model), half, 1e-4)
    apply_loras(model, [(motion, 1.0)])  # another rank, a bias and a dense delta, on part of the layers
    _close(_call(model), other, 1e-4)
    remove_loras(model)
    _close(_call(model), base, 1e-4)
    set_compiled(model, False)


@pytest.mark.parametrize("fp8", [False, True])
def test_merge_mode_equals_the_hand_merged_model_and_undoes_exactly(fp8):
    model = _model13(fp8)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    base = _call(model)
    loras = [(_lora(model, 20, extras=True), 0.6), (_lora(model, 21, name="motion", only="transformer_blocks"), 1.3)]
    reference = _call(_merged(model, loras))
    applied = apply_loras(model, loras, merge=True)
    fp8_layers = {n for n, m in _linears(model).items() if isinstance(m, ScaledFp8Linear)}
    assert set(applied.side_paths) == fp8_layers and len(applied.merged) == len(loras[0][0].targets) - len(fp8_layers)
    _close(_call(model), reference)
    applied.set_strengths([0.1, -2.0])
    applied.set_strengths([0.6, 1.3])
    _close(_call(model), reference)
    with model_on_device(model, BLOCK_CONTAINERS, "cpu", 0):
        assert torch.equal(_call(model), _call(model))
    remove_loras(model)
    assert torch.equal(_call(model), base)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_a_bf16_merge_is_rounded_once_from_the_original_weight():
    model = _model13().to(torch.bfloat16)
    layer = model.transformer_blocks[0].attn.to_v
    original = layer.weight.detach().clone()
    lora = _lora(model, 22, only="transformer_blocks.0.attn.to_v")
    applied = apply_loras(model, [(lora, 1.0)], merge=True)
    for strength in (0.3, 2.0, 0.7):
        applied.set_strength(0, strength)
    delta = lora.targets["transformer_blocks.0.attn.to_v"].delta()
    assert torch.equal(layer.weight, (original.float() + 0.7 * delta).to(torch.bfloat16))
    remove_loras(model)
    assert torch.equal(layer.weight, original)


def _embeds13(seed=1):
    g = torch.Generator().manual_seed(seed)
    return TextEmbeds(torch.randn(1, 6, TEXT, generator=g), torch.tensor([[1, 1, 1, 1, 0, 0]]),
                      torch.randn(1, POOLED, generator=g))


def _t2v(model, resident=None, loras=()):
    """The sampler installs `transformer.loras` for the run (and takes off what a run before installed)."""
    choices = tuple(LoraChoice(lora, strength) for lora, strength in loras)
    with model_on_device(model, BLOCK_CONTAINERS, "cpu", resident):
        return generate_t2v(LoadedTransformer(model=model, variant="t2v", source="test", loras=choices), _embeds13(),
                            T2VRequest(width=32, height=32, num_frames=5, steps=2, seed=4))


@pytest.mark.parametrize("fp8", [False, True])
def test_the_13b_t2v_sampler_with_loras_equals_the_hand_merged_model(fp8):
    model = _model13(fp8)
    loras = [(_lora(model, 16, extras=True), 0.8), (_lora(model, 17, name="motion", only="transformer_blocks"), 0.5)]
    reference = _t2v(_merged(model, loras))
    latents = _t2v(model, loras=loras)
    _close(latents, reference, 1e-4)
    assert torch.equal(_t2v(model, resident=0, loras=loras), latents)  # offloaded sampling agrees


def _embeds15(valid, seed):
    g = torch.Generator().manual_seed(seed)
    return TextEmbeds15(torch.randn(1, 10, 32, generator=g), torch.tensor([[1] * valid + [0] * (10 - valid)]),
                        torch.randn(1, 6, 24, generator=g), torch.tensor([[1, 1, 0, 0, 0, 0]]))


def _sample15(model, loras=()):
    transformer = LoadedTransformer15(model=model, variant=Variant("480p_t2v"), source="tiny",
                                      loras=tuple(LoraChoice(lora, strength) for lora, strength in loras))
    return generate(transformer, _embeds15(7, 1), _embeds15(3, 2),
                    Request15(width=64, height=48, num_frames=5, steps=2, cfg=3.0, flow_shift=5.0, seed=2))


@pytest.mark.parametrize("fp8", [False, True])
def test_the_15_sampler_with_loras_equals_the_hand_merged_model(fp8):
    model = tiny_transformer15(32, 24, 1152, seed=1, layers=2)
    keep_timesteps_exact(model)
    if fp8:
        names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.startswith("transformer_blocks")]
        quantize_linears(model, names, torch.float32)
    lora = _lora(model, 18, extras=True, family="hunyuan_video_15")
    reference = _sample15(_merged(model, [(lora, 1.1)]))
    _close(_sample15(model, [(lora, 1.1)]), reference, 1e-4)


def test_each_lora_keeps_its_own_block_filter_and_the_same_choices_only_change_strengths():
    model = _model13()
    style, motion = _lora(model, 23), _lora(model, 24, name="motion")
    choices = [LoraChoice(style, 0.7), LoraChoice(motion, -0.4, "single")]
    first = apply_loras(model, choices, family=FAMILY)
    singles = {n for n in motion.targets if n.startswith("single_transformer_blocks.")}
    assert first.layers == [len(style.targets), len(singles)] and "motion x-0.4 (%d layers; blocks single)" % len(
        singles) in first.summary()
    kept = {n: d for n, d in motion.targets.items() if n in singles}
    reference = _merged(_unapplied(model), [(style, 0.7), (LoraWeights("motion", FAMILY, kept), -0.4)])
    _close(_call(model), _call(reference))
    side = model.single_transformer_blocks[0].proj_out.lora_side_path
    again = apply_loras(model, [(style, 0.2), (motion, 0.9, "single")])  # a tuple with its filter: the same choice
    assert again is first and model.single_transformer_blocks[0].proj_out.lora_side_path is side
    assert again.strengths == [0.2, 0.9]
    other = apply_loras(model, [LoraChoice(style, 0.2), LoraChoice(motion, 0.9, "double")])  # another filter
    assert other is not first and other.layers[1] == len(motion.targets) - len(singles) - sum(
        not n.startswith(("transformer_blocks.", "single_transformer_blocks.")) for n in motion.targets)
    default = apply_loras(model, [LoraChoice(style, 1.0), LoraChoice(motion, 1.0, "single")], block_filter="double")
    assert [f.text for f in default.block_filters] == ["double", "single"]  # the call's filter for a LoRA without one
