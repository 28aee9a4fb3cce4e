"""The VRAM planner: its choices keep its own estimate under the budget on every card size; it refuses
what cannot fit with the numbers and what to lower; its constants match measured tensor bytes."""

import json

import pytest
import torch
from conftest import SHARED
from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoTransformer3DModel
from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import (
    BLOCK_CONTAINERS,
    derive_config,
    rope_axes_for,
)
from hunyuan_video_suite.pipelines.memory.live_bytes import FusedAttentionStandIn, PeakTensorBytes
from hunyuan_video_suite.pipelines.memory.vram_planner import (
    VAE_BYTES_PER_OUTPUT_VOXEL,
    DoesNotFit,
    GiB,
    ModelFacts,
    Request,
    activation_bytes,
    plan_memory,
)
from hunyuan_video_suite.pipelines.weights.fp8_linear import quantize_linears

LAYOUT = json.loads((SHARED / "comfy" / "checkpoint_layouts.json").read_text())["files"]["hunyuan_video_t2v_720p_bf16"]
CARDS_GB = (8, 12, 16, 24, 80)
REQUESTS = (Request(960, 544, 129), Request(1280, 720, 129), Request(1280, 720, 129, batch=2))


@pytest.fixture(scope="module")
def real_model():
    """The 13B T2V model on `meta`: real sizes, no memory."""
    shapes = {k: tuple(v) for k, v in LAYOUT.items()}
    with torch.device("meta"):
        model = HunyuanVideoTransformer3DModel(**derive_config(shapes, "t2v")).to(torch.bfloat16)
    return model


@pytest.fixture(scope="module")
def facts(real_model):
    return {"bf16": ModelFacts.from_model(real_model, BLOCK_CONTAINERS)}


def _fp8_facts(real_model):
    names = [n for n, m in real_model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith(BLOCK_CONTAINERS)]
    quantize_linears(real_model, names, torch.bfloat16)
    return ModelFacts.from_model(real_model, BLOCK_CONTAINERS)


def test_real_model_sizes_are_read_right(facts):
    bf16 = facts["bf16"]
    assert len(bf16.block_bytes) == 60
    total = sum(bf16.block_bytes) + bf16.other_bytes
    assert 25.5e9 < total < 25.8e9  # 12.8B parameters in bf16: the 25.6 GB users read about
    assert sum(bf16.block_bytes) / total > 0.95  # the blocks hold almost everything: offload pays


@pytest.mark.parametrize("card", CARDS_GB)
@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: f"{r.width}x{r.height}x{r.frames}b{r.batch}")
@pytest.mark.parametrize("weights", ["bf16", "fp8"])
def test_choices_keep_the_estimate_under_every_budget(real_model, facts, card, request_, weights):
    if weights == "fp8" and "fp8" not in facts:
        with torch.device("meta"):
            copy = HunyuanVideoTransformer3DModel(**real_model.config).to(torch.bfloat16)
        facts["fp8"] = _fp8_facts(copy)
    model_facts = facts[weights]
    free = int((card - 0.6) * GiB)  # what a card of that size shows free with a desktop on it
    try:
        plan = plan_memory(free, model_facts, request_)
    except DoesNotFit as refusal:
        assert refusal.needed > refusal.free == free
        assert "GB of GPU memory" in str(refusal) and "Lower" in str(refusal)
        # what the estimate says must fit (one video): 544p x 129 from 12 GB up, 720p x 129 from 16 GB up
        must_fit = request_.batch == 1 and (card >= 16 or (card >= 12 and request_.width == 960))
        assert not must_fit, f"a {card} GB card should fit {request_}"
        return
    assert plan.sampling_bytes <= free and plan.decode_bytes <= free
    assert 0 <= plan.resident_blocks <= plan.total_blocks == 60
    assert plan.fp8_storage == (weights == "fp8" or plan.quantize)
    if plan.offload:
        assert plan.chunk_tokens  # chunked feed-forwards leave room for more resident blocks
    if card == 16 and request_.batch == 1 and request_.width == 1280:
        assert plan.chunk_tokens  # 720p on 16 GB only fits with the feed-forwards chunked
    if card == 80 and request_.batch == 1:
        assert not plan.offload  # a big card keeps everything resident: no transfer cost
    line = plan.describe()
    assert "\n" not in line and "blocks" in line and "decode tiles" in line


def test_more_memory_never_means_fewer_resident_blocks(facts):
    residents = []
    for card in range(16, 81, 4):
        plan = plan_memory(card * GiB, facts["bf16"], Request(960, 544, 129))
        residents.append(plan.resident_blocks)
    assert residents == sorted(residents) and residents[0] < 60 == residents[-1]


def test_user_choices_are_honoured_or_refused_with_numbers(facts):
    request = Request(960, 544, 129)
    assert plan_memory(80 * GiB, facts["bf16"], request, offload=10).resident_blocks == 10
    assert plan_memory(80 * GiB, facts["bf16"], request, offload="off").resident_blocks == 60
    with pytest.raises(DoesNotFit, match=r"needs about 3\d\.\d GB .* only 23\.\d GB is free.*set offload to auto"):
        plan_memory(int(23.5 * GiB), facts["bf16"], request, offload="off")
    with pytest.raises(DoesNotFit, match=r"Lower num_frames to \d+ or fewer at 960x544"):
        plan_memory(7 * GiB, facts["bf16"], request, allow_fp8=False)


def test_activation_constant_covers_a_measured_forward_on_cpu():
    """Real tensors on the CPU (its own attention kernel): the estimate is above the exact count, and close."""
    torch.manual_seed(0)
    model = HunyuanVideoTransformer3DModel(
        in_channels=16, out_channels=16, num_attention_heads=4, attention_head_dim=128, num_layers=1, num_single_layers=1,
        num_refiner_layers=1, mlp_ratio=4.0, patch_size=2, patch_size_t=1, guidance_embeds=True, text_embed_dim=256,
        pooled_projection_dim=64, rope_axes_dim=rope_axes_for(128),
    ).to(torch.bfloat16).eval()
    facts = ModelFacts.from_model(model, BLOCK_CONTAINERS)
    request = Request(256, 256, 9)
    inputs = dict(
        hidden_states=torch.randn(1, 16, 3, 32, 32, dtype=torch.bfloat16), timestep=torch.tensor([500.0]),
        encoder_hidden_states=torch.randn(1, 256, 256, dtype=torch.bfloat16),
        encoder_attention_mask=torch.ones(1, 256, dtype=torch.int64),
        pooled_projections=torch.randn(1, 64, dtype=torch.bfloat16), guidance=torch.tensor([6000.0], dtype=torch.bfloat16),
    )
    with torch.no_grad(), PeakTensorBytes() as counter:
        model(**inputs)
    assert counter.peak <= activation_bytes(facts, request) <= 1.3 * counter.peak


def test_vae_constant_matches_the_real_vae_on_meta():
    with torch.device("meta"):
        vae = AutoencoderKLHunyuanVideo().to(torch.bfloat16)  # diffusers' defaults are the real 884-16c widths
    latent = torch.empty(1, 16, 5, 24, 24, device="meta", dtype=torch.bfloat16)  # a 192 px x 17-frame tile
    with torch.no_grad(), FusedAttentionStandIn(), PeakTensorBytes() as counter:
        frames = vae.decoder(vae.post_quant_conv(latent))
    voxels = frames.shape[2] * frames.shape[3] * frames.shape[4]
    assert 0.95 * VAE_BYTES_PER_OUTPUT_VOXEL * voxels <= counter.peak <= VAE_BYTES_PER_OUTPUT_VOXEL * voxels


def test_decode_tiles_shrink_to_the_free_memory_and_never_grow():
    """At decode time the spatial tile is lowered to the largest that fits the free memory; a tiling
    that already fits, or a card with room, keeps the user's choice."""
    from hunyuan_video_suite.pipelines.memory.sampling_memory import fit_decode_tiling
    from hunyuan_video_suite.pipelines.memory.vram_planner import decode_bytes
    from hunyuan_video_suite.pipelines.video.decoding import TilingOptions

    vae = torch.nn.Linear(1000, 1000)  # only its weight bytes matter here
    vae_bytes = sum(p.numel() * p.element_size() for p in vae.parameters())
    shape = (1, 16, 33, 90, 160)  # 1280x720x129 latents
    request = Request(1280, 720, 129)
    asked = TilingOptions(tile_size=512, tile_overlap=128)
    assert fit_decode_tiling(asked, shape, vae, "cuda", free=100 * GiB) == (asked, None)
    sizes = []
    for free_gb in (3, 4, 6):
        tiling, note = fit_decode_tiling(asked, shape, vae, "cuda", free=free_gb * GiB)
        sizes.append(tiling.tile_size)
        assert tiling.tile_size <= 512 and tiling.spatial and tiling.temporal
        assert decode_bytes(request, tiling.tile_size, vae_bytes, tiling.tile_frames) <= free_gb * GiB
        assert tiling.tile_overlap < tiling.tile_size and tiling.tile_overlap % 8 == 0
        assert (note is None) == (tiling.tile_size == 512)
    assert sizes == sorted(sizes) and sizes[0] < 512  # less memory, smaller tiles
    small = TilingOptions(tile_size=128, tile_overlap=32)
    assert fit_decode_tiling(small, shape, vae, "cuda", free=100 * GiB)[0].tile_size == 128
    assert fit_decode_tiling(asked, shape, vae, "cpu") == (asked, None)  # no plan on a CPU
