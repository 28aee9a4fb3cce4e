"""What the engine gives the 13B family applies to HunyuanVideo 1.5: block offload (also of fp8 blocks),
step caches (exact at threshold 0, skipping as documented), regional compile, mask-free attention by
default, and the VRAM planner with 1.5's token and latent sizes."""

import pytest
import torch
from hunyuan_video_suite.pipelines.demo.hv15_transformer import tiny_transformer15
from hunyuan_video_suite.pipelines.hunyuan_video_15.sampling import Request15, generate
from hunyuan_video_suite.pipelines.hunyuan_video_15.text_embeds import TextEmbeds15
from hunyuan_video_suite.pipelines.hunyuan_video_15.transformer_loading import (
    BLOCK_CONTAINERS,
    LoadedTransformer15,
    keep_timesteps_exact,
)
from hunyuan_video_suite.pipelines.hunyuan_video_15.variants import Variant
from hunyuan_video_suite.pipelines.memory.offload import model_on_device
from hunyuan_video_suite.pipelines.memory.sampling_memory import plan_sampling
from hunyuan_video_suite.pipelines.memory.vram_planner import GiB
from hunyuan_video_suite.pipelines.speed.options import SpeedOptions
from hunyuan_video_suite.pipelines.weights.fp8_linear import quantize_linears

DIMS = dict(text_dim=32, byt5_dim=24, image_dim=1152)
REQUEST = dict(width=64, height=48, num_frames=5, steps=5, cfg=3.0, flow_shift=5.0, seed=2)


def _transformer(fp8=False, layers=3, **speed) -> LoadedTransformer15:
    model = tiny_transformer15(**DIMS, seed=1, layers=layers)
    keep_timesteps_exact(model)
    if fp8:
        names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith(BLOCK_CONTAINERS)]
        quantize_linears(model, names, torch.float32)
    return LoadedTransformer15(model=model, variant=Variant("480p_t2v"), source="tiny", speed=SpeedOptions(**speed))


def _embeds(valid: int, seed: int) -> TextEmbeds15:
    g = torch.Generator().manual_seed(seed)
    return TextEmbeds15(torch.randn(1, 10, 32, generator=g), torch.tensor([[1] * valid + [0] * (10 - valid)]),
                        torch.randn(1, 6, 24, generator=g), torch.tensor([[1, 1, 0, 0, 0, 0]]))


def _run(transformer, info=None, **changes):
    return generate(transformer, _embeds(7, 1), _embeds(3, 2), Request15(**{**REQUEST, **changes}),
                    on_info=None if info is None else info.append)


@pytest.mark.parametrize("fp8", [False, True])
@pytest.mark.parametrize("resident", [0, 2])
def test_offloaded_sampling_equals_resident_sampling(fp8, resident):
    transformer = _transformer(fp8)
    reference = _run(transformer)
    with model_on_device(transformer.model, BLOCK_CONTAINERS, "cpu", resident) as offloader:
        latents = _run(transformer)
    torch.testing.assert_close(latents, reference, rtol=0, atol=0)
    assert offloader.offloaded_blocks == 3 - resident
    assert offloader.peak_onloaded <= 2


@pytest.mark.parametrize("preset", ["first_block", "teacache", "teacache_fast"])
def test_caches_are_exact_at_threshold_zero_and_skip_at_a_high_one(preset):
    off = _run(_transformer())
    info = []
    exact = _run(_transformer(cache=preset, cache_threshold=0.0), info)
    assert torch.equal(exact, off) and "0 of 5 transformer calls skipped" in info[0]  # CFG batched: one call a step
    skipping = _run(_transformer(cache=preset, cache_threshold=1e9), info)
    skipped = {"first_block": 4, "teacache": 3, "teacache_fast": 3}[preset]  # teacache always runs the first and last
    assert f"{skipped} of 5 transformer calls skipped" in info[1]
    assert not torch.allclose(skipping, off)


def test_mask_free_is_the_default_and_equals_the_masked_path():
    info = []
    default = _run(_transformer(), info)
    assert "mask-free" in info[0]
    masked = _run(_transformer(attention="masked"))
    torch.testing.assert_close(default, masked, atol=1e-4, rtol=1e-4)


def test_compiled_blocks_give_the_eager_latents():
    eager = _run(_transformer(attention="sdpa"), steps=2)
    transformer = _transformer(attention="sdpa", compile=True)
    compiled = _run(transformer, steps=2)
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)
    assert all(block._compiled_call_impl is not None for block in transformer.model.transformer_blocks)


def test_the_planner_counts_the_1_5_context_and_latent():
    transformer = _transformer()
    small = plan_sampling(transformer, 848, 480, 121, 1, "cpu", free=64 * GiB)
    large = plan_sampling(transformer, 1280, 720, 121, 1, "cpu", free=64 * GiB)
    tokens_480, tokens_720 = 31 * 30 * 53 + 1985, 31 * 45 * 80 + 1985
    assert large.sampling_bytes - small.sampling_bytes == pytest.approx(
        12.2 * (tokens_720 - tokens_480) * 48 * 4 + 3 * 4 * 32 * 31 * (45 * 80 - 30 * 53), rel=1e-6)
    batched = plan_sampling(transformer, 848, 480, 121, 2, "cpu", free=64 * GiB)
    assert batched.sampling_bytes > small.sampling_bytes
    with pytest.raises(ValueError, match="num_frames"):
        plan_sampling(transformer, 1280, 720, 121, 1, "cpu", free=small.sampling_bytes)


def test_the_context_mask_is_made_once_per_prompt():
    """The speed session reads a mask's lengths to the host once per mask tensor: the prompt keeps one."""
    embeds = _embeds(7, 1).with_image(torch.zeros(1, 729, 1152))
    assert embeds.attention_mask is embeds.attention_mask
    assert embeds.attention_mask.sum().item() == 7 + 2  # T2V's zero image tokens are not valid


def test_qwen_layers_are_planned_for_the_1_5_prompt_length():
    """The Qwen reads template + 1000 tokens a prompt: with the free memory of a 13B-length plan it streams more layers."""
    from hunyuan_video_suite.pipelines.demo.hv15_text import tiny_text_encoders15
    from hunyuan_video_suite.pipelines.memory.sampling_memory import LLM_CONTAINERS
    from hunyuan_video_suite.pipelines.memory.vram_planner import RESERVE, DoesNotFit, ModelFacts, plan_resident_layers

    encoders = tiny_text_encoders15()
    assert encoders.tokens_per_prompt == encoders.crop_start + 1000
    facts = ModelFacts.from_llm(encoders.qwen, LLM_CONTAINERS)
    def plan(free, tokens):
        try:
            return plan_resident_layers(free, facts, tokens=tokens)
        except DoesNotFit:
            return "refused"

    free = next(f for f in range(RESERVE, 2 * RESERVE, facts.block_bytes[0] // 4) if plan(f, 351) is None)
    assert plan(free, encoders.tokens_per_prompt) is not None  # streamed layers, or refused: never all resident
