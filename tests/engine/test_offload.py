"""Block offload: offloaded and resident sampling give the same latents; blocks come and go as documented.

On this CPU-only machine both devices are the CPU (as in diffusers' own offload tests): every onload
still makes a separate copy of the block's weights, and the hooks run exactly as on a GPU.
"""

import contextlib

import pytest
import torch
from diffusers import HunyuanVideoTransformer3DModel
from hunyuan_video_suite.pipelines.hunyuan_video_13b.prompt_encoding import TextEmbeds
from hunyuan_video_suite.pipelines.hunyuan_video_13b.t2v import T2VRequest, generate_t2v
from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import (
    BLOCK_CONTAINERS,
    LoadedTransformer,
    rope_axes_for,
)
from hunyuan_video_suite.pipelines.memory.offload import (
    BlockOffloader,
    MemoryOptions,
    _OffloadedBlock,
    model_on_device,
    parse_offload,
)
from hunyuan_video_suite.pipelines.weights.fp8_linear import quantize_linears


def _model(fp8=False):
    torch.manual_seed(0)
    model = HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=2,
        num_single_layers=3, num_refiner_layers=1, mlp_ratio=2.0, patch_size=2, patch_size_t=1, guidance_embeds=True,
        text_embed_dim=24, pooled_projection_dim=12, rope_axes_dim=rope_axes_for(10),
    )
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    if fp8:
        names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith(BLOCK_CONTAINERS)]
        quantize_linears(model, names, torch.float32)
    return LoadedTransformer(model=model.eval(), variant="t2v", source="test")


def _embeds(seed=1):
    g = torch.Generator().manual_seed(seed)
    return TextEmbeds(torch.randn(1, 6, 24, generator=g), torch.tensor([[1, 1, 1, 1, 0, 0]]), torch.randn(1, 12, generator=g))


REQUEST = dict(width=32, height=32, num_frames=5, steps=3, seed=4)


def _sample(transformer, resident):
    with model_on_device(transformer.model, BLOCK_CONTAINERS, "cpu", resident) as offloader:
        latents = generate_t2v(transformer, _embeds(), T2VRequest(**REQUEST))
    return latents, offloader


@pytest.mark.parametrize("fp8", [False, True])
@pytest.mark.parametrize("resident", [0, 2, 4])
def test_offloaded_sampling_equals_resident_sampling(fp8, resident):
    transformer = _model(fp8)
    reference, _ = _sample(transformer, None)
    latents, offloader = _sample(transformer, resident)
    torch.testing.assert_close(latents, reference, rtol=0, atol=0)
    offloaded = 5 - resident
    assert offloader.offloaded_blocks == offloaded
    assert offloader.onload_count == offloaded * REQUEST["steps"]  # each offloaded block once per model call
    assert offloader.peak_onloaded <= 2  # the block running and the one being prefetched


def test_compiled_blocks_run_offloaded():
    """The offload hooks stay out of the compiled block graphs, so compile and offload combine."""
    import dataclasses

    from hunyuan_video_suite.pipelines.speed.options import SpeedOptions

    transformer = _model()
    reference, _ = _sample(transformer, None)
    compiled = dataclasses.replace(transformer, speed=SpeedOptions(attention="sdpa", compile=True))
    latents, offloader = _sample(compiled, 2)
    torch.testing.assert_close(latents, reference, rtol=1e-4, atol=1e-4)
    assert offloader.onload_count == 3 * REQUEST["steps"]
    assert all(block._compiled_call_impl is not None for block in transformer.model.transformer_blocks)


def test_offloaded_blocks_hold_their_device_copy_only_while_they_run():
    transformer = _model()
    model = transformer.model
    blocks = [*model.transformer_blocks, *model.single_transformer_blocks]
    offloader = BlockOffloader(model, BLOCK_CONTAINERS, "cpu", resident=1).attach()
    stored = {id(b): b.norm1.linear.weight.data_ptr() if hasattr(b, "norm1") else b.norm.linear.weight.data_ptr()
              for b in blocks}
    seen = []

    def weight_ptr(block):
        return (block.norm1.linear if hasattr(block, "norm1") else block.norm.linear).weight.data_ptr()

    def spy(block):
        def hook(module, args):
            seen.append((blocks.index(block), weight_ptr(block) != stored[id(block)]))
        return hook

    handles = [b.register_forward_pre_hook(spy(b)) for b in blocks]
    with torch.no_grad():
        generate_t2v(transformer, _embeds(), T2VRequest(**{**REQUEST, "steps": 1}))
    for h in handles:
        h.remove()
    assert [index for index, _ in seen] == [0, 1, 2, 3, 4]
    # block 0 is resident (its own weights); the others run on an onloaded copy, prefetched ahead
    assert [onloaded for _, onloaded in seen] == [False, True, True, True, True]
    assert all(weight_ptr(b) == stored[id(b)] for b in blocks[1:])  # back to the CPU copy after use
    offloader.detach()
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_offload_choice_is_checked():
    assert parse_offload("auto") == "auto" and parse_offload("off") == "off"
    assert parse_offload("12") == 12 and parse_offload(0) == 0
    for bad in ("-1", "some", -3, 1.5, True):
        with pytest.raises(ValueError, match="offload must be 'auto', 'off' or a number of resident blocks"):
            parse_offload(bad)
    with pytest.raises(ValueError, match="fp8_compute must be 'off' or 'auto'"):
        MemoryOptions(fp8_compute="yes").validate()


def test_planned_offload_with_token_chunks_gives_the_resident_latents():
    from hunyuan_video_suite.pipelines.memory.sampling_memory import transformer_on_device
    from hunyuan_video_suite.pipelines.memory.vram_planner import Plan

    transformer = _model()
    reference, _ = _sample(transformer, None)
    plan = Plan(resident_blocks=2, total_blocks=5, fp8_storage=False, quantize=False, chunk_tokens=40, decode_tile=256,
                decode_tile_frames=16, sampling_bytes=0, decode_bytes=0, free_bytes=0)
    with transformer_on_device(transformer, "cpu", plan):
        assert "forward" in transformer.model.single_transformer_blocks[0].__dict__
        latents = generate_t2v(transformer, _embeds(), T2VRequest(**REQUEST))
    torch.testing.assert_close(latents, reference, rtol=1e-5, atol=1e-5)
    assert "forward" not in transformer.model.single_transformer_blocks[0].__dict__


def test_text_encoder_layers_are_streamed_when_they_do_not_fit():
    from hunyuan_video_suite.pipelines.demo import tiny
    from hunyuan_video_suite.pipelines.hunyuan_video_13b.prompt_encoding import encode_prompt
    from hunyuan_video_suite.pipelines.memory.sampling_memory import LLM_CONTAINERS, text_encoders_on_device
    from hunyuan_video_suite.pipelines.memory.vram_planner import (
        ENCODER_ACTIVATION_FACTOR,
        ENCODER_TOKENS,
        RESERVE,
        ModelFacts,
        plan_resident_layers,
    )

    encoders = tiny.tiny_text_encoders(seed=2)
    facts = ModelFacts.from_llm(encoders.llm, LLM_CONTAINERS)
    layer = facts.block_bytes[0]
    layers = len(facts.block_bytes)
    activations = int(ENCODER_ACTIVATION_FACTOR * ENCODER_TOKENS * facts.hidden * facts.compute_bytes * layers)
    fixed = RESERVE + facts.other_bytes + activations
    assert plan_resident_layers(fixed + sum(facts.block_bytes), facts) is None
    tight = plan_resident_layers(fixed + 3 * layer, facts)
    assert tight is not None and 0 <= tight < len(facts.block_bytes)
    reference = encode_prompt(encoders, "a boat at sea", "cpu")
    clip_bytes = sum(p.numel() * p.element_size() for p in encoders.clip.parameters())
    with text_encoders_on_device(encoders, "cpu", free=clip_bytes + fixed + 3 * layer):
        assert len(encoders.llm._forward_pre_hooks) == 1  # the offloader's prefetch hook: layers are streamed
        streamed = encode_prompt(encoders, "a boat at sea", "cpu")
    assert not encoders.llm._forward_pre_hooks
    torch.testing.assert_close(streamed.prompt_embeds, reference.prompt_embeds, rtol=0, atol=0)


class _FakeCuda:
    """Stands in for CUDA streams and events on a CPU-only machine and logs what the offloader asks of
    them, so the order of copies, waits and host syncs can be checked without a GPU."""

    def __init__(self, monkeypatch, offloader):
        self.log = []
        self.offloader = offloader
        fake = self

        class Event:
            def record(self, stream):
                pass

            def synchronize(self):
                fake.log.append(("host waits for block", fake.owner(self, "done")))

        class Stream:
            def wait_event(self, event):
                fake.log.append(("compute waits for copy", fake.owner(event, "ready")))

        compute = Stream()
        monkeypatch.setattr(torch.cuda, "Event", Event)
        monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: compute)
        monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
        monkeypatch.setattr(torch.Tensor, "record_stream", lambda self, stream: None, raising=False)
        original_onload = _OffloadedBlock.onload

        def onload(entry, device, non_blocking):
            fake.log.append(("copy", offloader._offloaded.index(entry)))
            original_onload(entry, device, non_blocking)

        monkeypatch.setattr(_OffloadedBlock, "onload", onload)
        offloader._stream = Stream()

    def owner(self, event, kind):
        return next(i for i, e in enumerate(self.offloader._offloaded) if getattr(e, kind) is event)


def test_on_cuda_the_host_waits_one_block_behind_and_two_copies_at_most_are_live(monkeypatch):
    """The CUDA protocol, with logged stand-ins for streams and events: each copy is waited for before
    its block runs, and a copy counts as live until the host has seen its block finish."""
    transformer = _model()
    offloader = BlockOffloader(transformer.model, BLOCK_CONTAINERS, "cpu", resident=1).attach()
    fake = _FakeCuda(monkeypatch, offloader)
    offloaded = [*transformer.model.transformer_blocks, *transformer.model.single_transformer_blocks][1:]
    for index, block in enumerate(offloaded):  # a block runs when its first layer does (inside the offload hooks)
        first_layer = block.norm1 if hasattr(block, "norm1") else block.norm
        first_layer.register_forward_pre_hook(lambda module, args, index=index: fake.log.append(("run", index)))
    with torch.no_grad():
        generate_t2v(transformer, _embeds(), T2VRequest(**{**REQUEST, "steps": 2}))
    offloader.detach()
    log = fake.log
    second = log.index(("copy", 0), 1)  # the second model call starts with its first prefetch
    for first, step in ((True, log[:second]), (False, log[second:])):
        for k in range(4):
            assert step.index(("copy", k)) < step.index(("compute waits for copy", k)) < step.index(("run", k))
            # the block run before must be done before the next copy takes memory, and the host waits
            # for it only once this block is queued (the GPU stays busy)
            if k > 0 or not first:
                before = ("host waits for block", (k - 1) % 4)
                assert step.index(("run", k)) < step.index(before)
                if k < 3:
                    assert step.index(before) < step.index(("copy", k + 1))
    live, peak = set(), 0
    for event, k in log:
        if event == "copy":
            live.add(k)
            peak = max(peak, len(live))
        elif event == "host waits for block":
            live.discard(k)
    assert peak == 2


@pytest.mark.parametrize("preset", ["teacache", "first_block"])
def test_a_block_the_step_cache_skips_is_never_copied(preset):
    """The cache's hooks sit outside the offload hooks: a skipped block costs no copy. With every block
    offloaded, copies follow the calls that ran; at most one prefetched block waits for the next call."""
    import dataclasses

    from hunyuan_video_suite.pipelines.speed.options import SpeedOptions

    transformer = dataclasses.replace(_model(), speed=SpeedOptions(cache=preset, cache_threshold=1e9))
    steps = 6
    info = []
    with model_on_device(transformer.model, BLOCK_CONTAINERS, "cpu", 0) as offloader:
        generate_t2v(transformer, _embeds(), T2VRequest(**{**REQUEST, "steps": steps}), on_info=info.append)
    skipped = int(info[0].split(": ")[-1].split(" of")[0])
    assert skipped == (steps - 2 if preset == "teacache" else steps - 1)
    ran = steps - skipped
    if preset == "teacache":  # the whole stack is skipped: no block runs
        assert ran * 5 <= offloader.onload_count <= ran * 5 + 1
    else:  # First Block Cache always runs the first block and may prefetch the second
        assert ran * 5 + skipped <= offloader.onload_count <= ran * 5 + skipped + 1
    assert offloader.onload_count < steps * 5 and offloader.peak_onloaded <= 2
