"""Speed options: mask-free attention equals the masked path, caches skip as documented, compile and
eager agree, missing kernels fall back with a notice, and the loop reads nothing back per step."""

import logging

import pytest
import torch
from diffusers.models.transformers import transformer_hunyuan_video
from hunyuan_video_suite.pipelines.demo import tiny
from hunyuan_video_suite.pipelines.demo.tiny_transformer import tiny_transformer
from hunyuan_video_suite.pipelines.denoise.flow_matching import SamplingSettings, denoise, initial_noise
from hunyuan_video_suite.pipelines.hunyuan_video_13b.prompt_encoding import encode_prompt
from hunyuan_video_suite.pipelines.hunyuan_video_13b.t2v import T2VRequest, generate_t2v
from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import LoadedTransformer
from hunyuan_video_suite.pipelines.speed.attention import MaskFreeAttention, choose_backend
from hunyuan_video_suite.pipelines.speed.options import SpeedOptions, open_speed
from hunyuan_video_suite.pipelines.speed.step_cache import THRESHOLD_PRESETS
from torch.overrides import TorchFunctionMode

TEXT_DIM, POOLED_DIM, LATENT = 16, 12, 4
TEXT_TOKENS = 32


@pytest.fixture(scope="module")
def encoders():
    return tiny.tiny_text_encoders(seed=0)


@pytest.fixture(scope="module")
def t2v(encoders):
    return tiny_transformer(encoders.llm.config.hidden_size, encoders.clip.config.hidden_size, 16, seed=0)


def _model(variant):
    return tiny_transformer(TEXT_DIM, POOLED_DIM, LATENT, variant=variant, seed=3)


def _inputs(model, masks, seed=0):
    """Random model inputs for a batch with one text mask row per sample."""
    generator = torch.Generator().manual_seed(seed)
    batch = len(masks)
    return dict(
        hidden_states=torch.randn(batch, model.config.in_channels, 3, 8, 6, generator=generator),
        timestep=torch.tensor([700.0] * batch),
        encoder_hidden_states=torch.randn(batch, TEXT_TOKENS, TEXT_DIM, generator=generator),
        encoder_attention_mask=torch.stack(masks),
        pooled_projections=torch.randn(batch, POOLED_DIM, generator=generator),
        guidance=torch.tensor([6000.0] * batch) if model.config.guidance_embeds else None,
        return_dict=False,
    )


def _prefix(n):
    mask = torch.zeros(TEXT_TOKENS, dtype=torch.int64)
    mask[:n] = 1
    return mask


def _custom_quirk_mask():
    """HunyuanCustom's positive mask: not a prefix of ones (its extra ones sit at the end)."""
    mask = _prefix(7)
    mask[-5:] = 1
    return mask


class _AttentionSpy:
    """Records the mask and key length of every joint-attention kernel call."""

    def __init__(self, monkeypatch):
        self.calls = []
        original = transformer_hunyuan_video.dispatch_attention_fn

        def spy(query, key, value, attn_mask=None, **kwargs):
            self.calls.append((attn_mask, key.shape[1]))
            return original(query, key, value, attn_mask=attn_mask, **kwargs)

        monkeypatch.setattr(transformer_hunyuan_video, "dispatch_attention_fn", spy)


CASES = {
    "batch 1": [_prefix(9)],
    "cfg pair of different lengths": [_prefix(6), _prefix(17)],
    "batch 3": [_prefix(4), _prefix(4), _prefix(11)],
    "batch 2 same length": [_prefix(8), _prefix(8)],
    "non-prefix mask": [_custom_quirk_mask()],
    "non-prefix with a shorter negative": [_custom_quirk_mask(), _prefix(5)],
}


@pytest.mark.parametrize("variant", ["t2v", "i2v_v1", "i2v_v2", "custom"])
@pytest.mark.parametrize("case", list(CASES))
def test_trimmed_attention_equals_masked_attention(variant, case, monkeypatch):
    model = _model(variant)
    masks = CASES[case]
    inputs = _inputs(model, masks, seed=len(case))
    with torch.no_grad():
        masked = model(**inputs)[0]
        spy = _AttentionSpy(monkeypatch)
        attention = MaskFreeAttention.for_model(model).install(choose_backend("sdpa", "cpu"))
        lengths = tuple(int(m.sum()) for m in masks)
        with attention.lengths(lengths):
            trimmed = model(**inputs)[0]
        calls = list(spy.calls)
        attention.remove()
        again = model(**inputs)[0]
    torch.testing.assert_close(trimmed, masked, rtol=1e-5, atol=1e-5)
    assert torch.equal(again, masked)  # removed: diffusers' own path again
    video = 3 * 4 * 3
    assert calls and all(mask is None for mask, _ in calls), "the mask-free path passed a mask"
    assert {keys for _, keys in calls} == {video + n for n in lengths}


def test_an_installed_kernel_that_fails_its_test_call_falls_back_with_a_notice(monkeypatch, caplog):
    from hunyuan_video_suite.pipelines.speed import attention

    if torch.cuda.is_available():
        pytest.skip("on a real GPU the test call would reach a real kernel")
    monkeypatch.setattr(attention, "_usable", lambda name: None)  # as if flash-attn were installed
    attention._test_call.cache_clear()
    with caplog.at_level(logging.WARNING, logger="hunyuan_video_suite"):
        choice = choose_backend("flash", "cuda", torch.bfloat16)
    attention._test_call.cache_clear()
    assert choice.dispatcher_name == "native"
    assert "attention 'flash' is not available (flash failed a test call (" in choice.notice
    assert caplog.text.count("not available") == 1


def test_a_masked_call_never_reaches_a_kernel_that_takes_no_mask(monkeypatch):
    """With FlashAttention or SageAttention installed on the blocks, a call that still carries a mask
    (no lengths given, e.g. a row with no valid token) runs diffusers' masked path on SDPA."""
    from hunyuan_video_suite.pipelines.speed.attention import AttentionChoice

    model = _model("t2v")
    inputs = _inputs(model, [_prefix(6), _prefix(13)])
    backends = []
    original = transformer_hunyuan_video.dispatch_attention_fn

    def kernel(query, key, value, attn_mask=None, backend=None, **kwargs):
        backends.append((backend, attn_mask is not None))
        if backend is not None and backend.value == "flash" and attn_mask is not None:
            raise ValueError("`attn_mask` is not supported for flash-attn 2.")
        return original(query, key, value, attn_mask=attn_mask, **kwargs)  # the CPU has no flash kernel: SDPA

    with torch.no_grad():
        reference = model(**inputs)[0]
        monkeypatch.setattr(transformer_hunyuan_video, "dispatch_attention_fn", kernel)
        attention = MaskFreeAttention.for_model(model).install(AttentionChoice("flash", "flash"))
        masked = model(**inputs)[0]
        joint = [b for b in backends if b[1]]
        with attention.lengths((6, 13)):
            trimmed = model(**inputs)[0]
        attention.remove()
    torch.testing.assert_close(masked, reference, rtol=0, atol=0)
    torch.testing.assert_close(trimmed, reference, rtol=1e-5, atol=1e-5)
    assert joint and all(backend is None for backend, _ in joint)  # the masked calls went to SDPA
    assert any(backend is not None and backend.value == "flash" for backend, mask in backends if not mask)


def test_sampler_with_cfg_matches_masked_sampler(encoders, t2v):
    positive = encode_prompt(encoders, "a red fox runs through fresh snow")
    negative = encode_prompt(encoders, "blurry, static, low quality, deformed")
    assert positive.attention_mask.sum() != negative.attention_mask.sum()
    request = T2VRequest(width=32, height=32, num_frames=5, steps=3, true_cfg=3.0, seed=5)
    plain = generate_t2v(LoadedTransformer(t2v, "t2v", "test", SpeedOptions(attention="masked")), positive, request,
                         negative=negative)
    fast = generate_t2v(LoadedTransformer(t2v, "t2v", "test", SpeedOptions(attention="auto")), positive, request,
                        negative=negative)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


def test_defaults_make_no_masked_joint_attention_call_and_leave_the_model_as_it_was(encoders, t2v, monkeypatch):
    positive = encode_prompt(encoders, "a boat")
    negative = encode_prompt(encoders, "blurry and static, low quality")
    request = T2VRequest(width=32, height=32, num_frames=5, steps=2, true_cfg=2.0, seed=1)
    masked = generate_t2v(LoadedTransformer(t2v, "t2v", "test", SpeedOptions(attention="masked")), positive, request,
                          negative=negative)
    spy = _AttentionSpy(monkeypatch)
    bare = generate_t2v(t2v, positive, request, negative=negative)
    loaded = generate_t2v(LoadedTransformer(t2v, "t2v", "test"), positive, request, negative=negative)
    assert torch.equal(bare, loaded)
    torch.testing.assert_close(loaded, masked, rtol=1e-5, atol=1e-5)
    joint = len(t2v.transformer_blocks) + len(t2v.single_transformer_blocks)
    assert len(spy.calls) >= 2 * 2 * 2 * joint  # two runs of two steps of two branches, every block
    assert [mask for mask, _ in spy.calls if mask is not None] == []
    base = transformer_hunyuan_video.HunyuanVideoAttnProcessor2_0
    assert all(type(p) is base for name, p in t2v.attn_processors.items() if "context_embedder" not in name)


def _run(encoders, model, options, steps, cfg=1.0, info=None, variant="t2v"):
    positive = encode_prompt(encoders, "a red fox runs through fresh snow")
    negative = encode_prompt(encoders, "blurry") if cfg > 1 else None
    request = T2VRequest(width=32, height=32, num_frames=5, steps=steps, true_cfg=cfg, seed=2)
    return generate_t2v(LoadedTransformer(model, variant, "test", options), positive, request, negative=negative,
                        on_info=info.append if info is not None else None)


@pytest.mark.parametrize("preset", THRESHOLD_PRESETS)
def test_cache_at_threshold_zero_is_exact(encoders, t2v, preset):
    info = []
    off = _run(encoders, t2v, SpeedOptions(), steps=6, cfg=2.0)
    cached = _run(encoders, t2v, SpeedOptions(cache=preset, cache_threshold=0.0), steps=6, cfg=2.0, info=info)
    assert torch.equal(cached, off)
    assert "0 of 12 transformer calls skipped" in info[0]


@pytest.mark.parametrize(
    "preset,skipped",
    [
        ("first_block", lambda steps: steps - 1),  # only the first call of a branch has nothing to compare with
        ("teacache", lambda steps: steps - 2),  # the first and last steps always run
    ],
)
def test_cache_skips_as_documented(encoders, t2v, preset, skipped):
    steps = 7
    info = []
    off = _run(encoders, t2v, SpeedOptions(), steps=steps, cfg=2.0)
    cached = _run(encoders, t2v, SpeedOptions(cache=preset, cache_threshold=1e9), steps=steps, cfg=2.0, info=info)
    assert f"{2 * skipped(steps)} of {2 * steps} transformer calls skipped" in info[0]
    assert not torch.allclose(cached, off)
    # the state of one run never leaks into the next
    again = _run(encoders, t2v, SpeedOptions(cache=preset, cache_threshold=1e9), steps=steps, cfg=2.0, info=info)
    assert torch.equal(again, cached) and info[1] == info[0]


def test_a_higher_threshold_never_skips_fewer_calls(encoders, t2v):
    counts = []
    for threshold in (0.0, 0.15, 50.0, 1e9):
        info = []
        _run(encoders, t2v, SpeedOptions(cache="teacache_fast", cache_threshold=threshold), steps=12, info=info)
        counts.append(int(info[0].split("teacache_fast")[1].split(": ")[1].split(" of")[0]))
    assert counts == sorted(counts) and counts[0] == 0 and counts[-1] == 10


def test_compiled_and_eager_give_the_same_latents(encoders, t2v):
    eager = _run(encoders, t2v, SpeedOptions(attention="sdpa"), steps=2)
    compiled = _run(encoders, t2v, SpeedOptions(attention="sdpa", compile=True), steps=2)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
    assert all(block._compiled_call_impl is not None for block in t2v.transformer_blocks)
    _run(encoders, t2v, SpeedOptions(attention="sdpa"), steps=1)
    assert all(block._compiled_call_impl is None for block in t2v.transformer_blocks)


@pytest.mark.parametrize("requested,device,dtype,reason", [
    ("sage", "cuda", torch.bfloat16, "sageattention"),
    ("flash", "cuda", torch.float16, "flash"),
    ("sage", "cpu", torch.bfloat16, "needs a CUDA GPU"),
    ("flash", "cuda", torch.float32, "needs bf16 or fp16 weights, this model computes in float32"),
])
def test_missing_backend_falls_back_with_one_notice(requested, device, dtype, reason, caplog):
    if device == "cuda" and torch.cuda.is_available() and dtype != torch.float32:
        pytest.skip("an installed kernel would be chosen on a real GPU")
    with caplog.at_level(logging.WARNING, logger="hunyuan_video_suite"):
        choice = choose_backend(requested, device, dtype)
    assert choice.dispatcher_name == "native"
    assert reason in choice.notice.lower() or reason in choice.notice
    assert "using PyTorch SDPA instead" in choice.notice and "\n" not in choice.notice
    assert [r.getMessage() for r in caplog.records] == [choice.notice]


def test_auto_falls_back_quietly_and_the_notice_reaches_the_info_line(encoders, t2v):
    assert choose_backend("auto", "cpu").notice == ""
    info = []
    _run(encoders, t2v, SpeedOptions(attention="flash"), steps=1, info=info)
    assert "attention 'flash' is not available" in info[0]


def test_bad_options_are_refused(encoders, t2v):
    for options, message in [
        (SpeedOptions(attention="fastest"), "attention must be one of masked, auto, sdpa, sage, flash"),
        (SpeedOptions(cache="magic"), "cache must be one of off, first_block, teacache, teacache_fast"),
        (SpeedOptions(cache="teacache", cache_threshold=-1.0), "cache_threshold must be 0 or more"),
    ]:
        with pytest.raises(ValueError, match=message):
            _run(encoders, t2v, options, steps=1)


class _HostReads(TorchFunctionMode):
    READS = {"item", "tolist", "cpu", "__bool__", "__int__", "__float__", "nonzero"}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self.READS:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("options", [SpeedOptions(attention="masked"), SpeedOptions()])
def test_sampling_loop_reads_nothing_back_per_step(encoders, t2v, options):
    positive = encode_prompt(encoders, "a red fox")
    negative = encode_prompt(encoders, "blurry and static")
    reads = {}
    for steps in (2, 5):
        noise = initial_noise((1, 16, 2, 4, 4), seed=0)
        settings = SamplingSettings(steps=steps, true_cfg=2.0)
        transformer = LoadedTransformer(t2v, "t2v", "test", options)
        with open_speed(transformer, steps, "cpu") as speed, _HostReads() as mode:
            denoise(t2v, noise, positive, negative, settings, speed=speed)
        reads[steps] = mode.count
    assert reads[2] == reads[5]


@pytest.mark.parametrize("variant", ["t2v", "i2v_v1", "i2v_v2", "custom"])
@pytest.mark.parametrize("preset", THRESHOLD_PRESETS)
def test_cache_presets_work_for_every_variant(variant, preset):
    model = _model(variant)
    inputs = _inputs(model, [_prefix(9)])
    steps = 5

    def run(options):
        outputs = []
        with torch.no_grad(), open_speed(LoadedTransformer(model, variant, "test", options), steps, "cpu") as speed:
            for index, t in enumerate(torch.linspace(900.0, 100.0, steps)):
                with speed.call(inputs["encoder_attention_mask"], "cond", index):
                    outputs.append(model(**{**inputs, "timestep": t.expand(1)})[0])
        return outputs, speed.cache.stats

    off, _ = run(SpeedOptions(attention="sdpa"))
    exact, stats = run(SpeedOptions(attention="sdpa", cache=preset, cache_threshold=0.0))
    assert stats.skipped == 0 and all(torch.equal(a, b) for a, b in zip(exact, off))
    _, stats = run(SpeedOptions(attention="sdpa", cache=preset, cache_threshold=1e9))
    assert stats.skipped == (steps - 1 if preset == "first_block" else steps - 2)
