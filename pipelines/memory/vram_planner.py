"""The VRAM planner: before anything runs, decide what stays on the GPU, and refuse what cannot fit.

Pure functions of (free GPU bytes, the model's sizes, the request). The estimate of one sampling
step's peak GPU memory is

    peak = reserve
         + other weights                              (embedders, refiner, final layer: always resident)
         + sum(bytes of the first R blocks)           (resident blocks, as stored: bf16 or fp8)
         + 2 x largest offloaded block                (the block running + the one prefetched), if R < N
         + fp8 dequant scratch                        (6 bytes x largest fp8 linear: fp32 product + bf16 copy)
         + ACTIVATION_FACTOR x tokens x hidden x compute bytes   (one block's live activations)
         + latents and the noise prediction (float32, 3 latent-sized tensors)

with tokens = batch x (latent frames x H/16 x W/16 + 256 text tokens). True CFG runs its two
passes one after the other, so it does not double the activations. The decode estimate per tile is

    VAE weights + VAE_BYTES_PER_OUTPUT_VOXEL x tile^2 x (tile_frames + 1) + 3 x one temporal chunk's frames

and does not depend on the frame count (decoded chunks go to CPU memory as they finish, see decoding.py).

Where the constants come from:
- ACTIVATION_FACTOR = 18.2: measured exactly (every tensor byte the forward creates, with attention
  counted as a fused kernel holds it) on the real 13B layout on the `meta` device, at 544x960x33,
  544x960x129 and 720x1280x129: 18.07-18.15, the single-stream block being the peak (double block
  13.1). `benchmarks/planner_constants.py` re-measures it; tests/engine/test_vram_planner.py checks it on a
  small model on CPU.
- ACTIVATION_FACTOR_CHUNKED = 14.2: the same count with the feed-forward paths computed over chunks
  of 8192 tokens (pipelines/memory/token_chunking.py): 14.14-14.15 at 544p and 720p x 129, the same for
  chunks of 4096-16384 (the attention step is then the peak). The planner chunks whenever the model
  does not fit wholly on the GPU without it.
- VAE_BYTES_PER_OUTPUT_VOXEL = 2340 (bf16): measured the same way on the real VAE widths
  (128/256/512/512) for tiles of 128-512 px and 16-32 frames: 2286-2330.
- HunyuanVideo 1.5 (`PlannerProfile`, set by its loader): 54 double blocks only, patch 1 on a 16x VAE (16 px
  per token as well), up to 729 + 256 + 1000 context tokens. Its double block measured the same way at
  480p and 720p x 121 frames: 11.7-11.9 (the feed-forward chunks do not lower it: attention is its peak),
  plus 0.25 for the RoPE tables: ACTIVATION_FACTOR_HV15 = 12.2, chunked or not. Measured with mask-free
  attention; diffusers' masked path also builds a dense [L, L] mask (13 GB at 720p x 121), which is not planned.
- RESERVE = 1.5 GiB: CUDA context, cuBLAS/cuDNN workspaces and allocator slack, which a tensor
  count cannot see. Planned, not measured (no GPU lent yet): check it with benchmarks/gpu_offload.py.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

GiB = 1024**3
ACTIVATION_FACTOR = 18.2
ACTIVATION_FACTOR_CHUNKED = 14.2  # with the feed-forwards in token chunks (token_chunking.py)
CHUNK_TOKENS = 8192
VAE_BYTES_PER_OUTPUT_VOXEL = 2340
RESERVE = int(1.5 * GiB)
TEXT_TOKENS = 256
PATCH = 16  # pixels per token side (VAE 8 x patch 2)
TEMPORAL = 4
DECODE_TILE_SIZES = (512, 384, 256, 192, 128)
DECODE_TILE_FRAMES = 16
DECODE_TILE_OVERLAP = 64
FP8_SCRATCH_BYTES_PER_WEIGHT = 6
ACTIVATION_FACTOR_HV15 = 12.2
ENCODER_TOKENS = 256 + 95  # the prompt plus the T2V template that is cropped off afterwards
ENCODER_ACTIVATION_FACTOR = 8


@dataclass(frozen=True)
class PlannerProfile:
    """What differs between model families in the formula: context tokens, latent downscale, activation factors.
    The defaults are the 13B family's; a family's loaded transformer may carry its own (`planner_profile`)."""

    text_tokens: int = TEXT_TOKENS
    latent_scale: int = 8
    activation_factor: float = ACTIVATION_FACTOR
    activation_factor_chunked: float = ACTIVATION_FACTOR_CHUNKED


HV15_PROFILE = PlannerProfile(text_tokens=729 + 256 + 1000, latent_scale=16, activation_factor=ACTIVATION_FACTOR_HV15,
                              activation_factor_chunked=ACTIVATION_FACTOR_HV15)


@dataclass(frozen=True)
class ModelFacts:
    """What the planner needs to know about a transformer, read off the model (`from_model`)."""

    block_bytes: tuple[int, ...]  # per block, in execution order, as stored
    other_bytes: int  # every weight outside the blocks
    hidden: int
    compute_bytes: int = 2  # bf16/fp16; 4 for fp32
    largest_fp8_linear: int = 0  # elements of the largest fp8-stored linear weight (0: none)
    largest_linear: int = 0  # elements of the largest block linear weight (for an fp8 plan of a bf16 model)
    profile: PlannerProfile = PlannerProfile()

    @classmethod
    def from_model(cls, model, containers, profile: PlannerProfile = PlannerProfile()) -> "ModelFacts":
        """A HunyuanVideo transformer (diffusers config names)."""
        facts = cls._read(model, containers, int(model.config.num_attention_heads * model.config.attention_head_dim))
        return replace(facts, profile=profile)

    @classmethod
    def from_llm(cls, llm, containers) -> "ModelFacts":
        """A transformers text model (`config.hidden_size`)."""
        return cls._read(llm, containers, int(llm.config.hidden_size))

    @classmethod
    def _read(cls, model, containers, hidden: int) -> "ModelFacts":
        from ..weights.fp8_linear import ScaledFp8Linear
        from .offload import blocks_in_order, module_bytes

        blocks = blocks_in_order(model, containers)
        total = module_bytes(model)
        fp8 = [m.weight.numel() for m in model.modules() if isinstance(m, ScaledFp8Linear)]
        linears = [m.weight.numel() for b in blocks for m in b.modules() if hasattr(m, "in_features")]
        compute = next((p.element_size() for p in model.parameters() if p.is_floating_point()), 2)
        block_bytes = tuple(module_bytes(b) for b in blocks)
        return cls(block_bytes, total - sum(block_bytes), hidden, compute, max(fp8, default=0), max(linears, default=0))

    def as_fp8(self) -> "ModelFacts":
        """The same model with its block linears stored in fp8 (about half the block bytes)."""
        return ModelFacts(tuple(b // 2 for b in self.block_bytes), self.other_bytes, self.hidden, self.compute_bytes,
                          self.largest_linear, self.largest_linear, self.profile)

    @property
    def is_fp8(self) -> bool:
        return self.largest_fp8_linear > 0


@dataclass(frozen=True)
class Request:
    width: int
    height: int
    frames: int
    batch: int = 1
    latent_channels: int = 16
    text_tokens: int = TEXT_TOKENS
    latent_scale: int = 8

    @classmethod
    def for_profile(cls, profile: PlannerProfile, width: int, height: int, frames: int, batch: int = 1,
                    latent_channels: int = 16) -> "Request":
        return cls(width, height, frames, batch, latent_channels, profile.text_tokens, profile.latent_scale)

    @property
    def tokens(self) -> int:
        latent_frames = (self.frames - 1) // TEMPORAL + 1
        return self.batch * (latent_frames * (self.height // PATCH) * (self.width // PATCH) + self.text_tokens)

    @property
    def latent_bytes(self) -> int:
        latent_frames = (self.frames - 1) // TEMPORAL + 1
        scale = self.latent_scale
        return 4 * self.batch * self.latent_channels * latent_frames * (self.height // scale) * (self.width // scale)


@dataclass(frozen=True)
class Plan:
    """The planner's choice and its own estimate of the peak (bytes)."""

    resident_blocks: int
    total_blocks: int
    fp8_storage: bool  # the block weights are fp8 while sampling
    quantize: bool  # ... because the planner chose to store a bf16/fp16 model's block linears in fp8
    chunk_tokens: int | None  # feed-forwards over chunks of this many tokens (None: whole sequence)
    decode_tile: int
    decode_tile_frames: int
    sampling_bytes: int
    decode_bytes: int
    free_bytes: int

    @property
    def offload(self) -> bool:
        return self.resident_blocks < self.total_blocks

    def describe(self) -> str:
        blocks = (f"{self.resident_blocks}/{self.total_blocks} blocks on the GPU, the rest streamed"
                  if self.offload else f"all {self.total_blocks} blocks on the GPU")
        storage = "stored fp8 (quantized to fit)" if self.quantize else ("fp8" if self.fp8_storage else "as stored")
        chunks = f"; feed-forward in chunks of {self.chunk_tokens} tokens" if self.chunk_tokens else ""
        return (f"memory plan: {blocks}; weights {storage}{chunks}; decode tiles {self.decode_tile}px x {self.decode_tile_frames} "
                f"frames; estimated peak {_gib(max(self.sampling_bytes, self.decode_bytes))} of {_gib(self.free_bytes)} free")


class DoesNotFit(ValueError):
    """The request needs more GPU memory than is free even with every block offloaded."""

    def __init__(self, needed: int, free: int, advice: str):
        self.needed, self.free = needed, free
        super().__init__(f"this request needs about {_gib(needed)} of GPU memory even with every transformer block "
                         f"offloaded, but only {_gib(free)} is free. {advice}")


def _gib(nbytes: int) -> str:
    return f"{nbytes / GiB:.1f} GB"


def activation_bytes(facts: ModelFacts, request: Request, chunked: bool = False) -> int:
    factor = facts.profile.activation_factor_chunked if chunked else facts.profile.activation_factor
    return int(factor * request.tokens * facts.hidden * facts.compute_bytes)


def sampling_bytes(facts: ModelFacts, request: Request, resident: int, chunked: bool = False) -> int:
    """The formula in the module docstring, for `resident` blocks kept on the GPU."""
    blocks = facts.block_bytes
    resident = max(0, min(resident, len(blocks)))
    streamed = 2 * max(blocks[resident:]) if resident < len(blocks) else 0
    scratch = FP8_SCRATCH_BYTES_PER_WEIGHT * facts.largest_fp8_linear
    return (RESERVE + facts.other_bytes + sum(blocks[:resident]) + streamed + scratch
            + activation_bytes(facts, request, chunked) + 3 * request.latent_bytes)


def decode_bytes(request: Request, tile: int, vae_bytes: int, tile_frames: int = DECODE_TILE_FRAMES) -> int:
    tile = min(tile, max(request.width, request.height))
    chunk_frames = tile_frames + 1
    chunk_output = 2 * 3 * chunk_frames * request.width * request.height * request.batch
    per_tile = int(VAE_BYTES_PER_OUTPUT_VOXEL * tile * tile * chunk_frames * request.batch)
    return RESERVE + vae_bytes + per_tile + 3 * chunk_output


def choose_decode_tile(request: Request, free: int, vae_bytes: int) -> int:
    """The largest spatial tile whose decode fits (bigger tiles are faster and show fewer seams)."""
    for tile in DECODE_TILE_SIZES:
        if decode_bytes(request, tile, vae_bytes) <= free:
            return tile
    return DECODE_TILE_SIZES[-1]


def plan_memory(free: int, facts: ModelFacts, request: Request, offload="auto", allow_fp8: bool = True,
                vae_bytes: int = 470 * 1024**2) -> Plan:
    """Resident blocks, fp8 storage, token chunking and decode tiling for `request` within `free` bytes.

    Token chunking is used unless the whole model fits resident without it (it costs a few kernel
    launches, and buys room for more resident blocks).
    """
    try:
        plan = _plan(free, facts, request, offload, allow_fp8, vae_bytes, chunked=False)
        if not (offload == "auto" and plan.offload):
            return plan
    except DoesNotFit:
        pass
    return _plan(free, facts, request, offload, allow_fp8, vae_bytes, chunked=True)


def _plan(free: int, facts: ModelFacts, request: Request, offload, allow_fp8: bool, vae_bytes: int, chunked: bool) -> Plan:
    """One planning pass (see `plan_memory`).

    offload: "auto" (most resident blocks that fit), "off" (all resident, refused if that does not
    fit), or a block count (kept as asked, refused if even that does not fit). fp8 storage is chosen
    only when the weights are not fp8 already, `allow_fp8` (the user left weight_dtype on auto) and
    the request does not fit otherwise.
    """
    total = len(facts.block_bytes)
    quantize = False
    if offload == "off":
        resident = total
    elif offload == "auto":
        resident = _most_resident(free, facts, request, chunked)
        if resident is None and allow_fp8 and not facts.is_fp8 and _most_resident(free, facts.as_fp8(), request, chunked) is not None:
            facts, quantize = facts.as_fp8(), True
            resident = _most_resident(free, facts, request, chunked)
    else:
        resident = min(int(offload), total)
    needed = sampling_bytes(facts, request, 0 if resident is None else resident, chunked)
    if resident is None or needed > free:
        floor = sampling_bytes(facts, request, 0, chunked)
        if floor > free:
            raise DoesNotFit(floor, free, _advice(facts, request, free, chunked))
        what = "off" if offload == "off" else f"{offload} resident blocks"
        raise DoesNotFit(needed, free, f"Offload {what} keeps too much on the GPU: set offload to auto (or fewer blocks).")
    tile = choose_decode_tile(request, free, vae_bytes)
    return Plan(resident, total, facts.is_fp8, quantize, CHUNK_TOKENS if chunked else None, tile, DECODE_TILE_FRAMES, needed,
                decode_bytes(request, tile, vae_bytes), free)


def plan_resident_layers(free: int, facts: ModelFacts, tokens: int = ENCODER_TOKENS) -> int | None:
    """Text encoders: how many layers fit next to the rest (None: all of them). Encoding one prompt
    keeps every layer's hidden states (transformers' output_hidden_states), bounded here by
    ENCODER_ACTIVATION_FACTOR x tokens x hidden x bytes per layer (a generous bound, not measured)."""
    layers = len(facts.block_bytes)
    activations = int(ENCODER_ACTIVATION_FACTOR * tokens * facts.hidden * facts.compute_bytes * max(layers, 1))
    fixed = RESERVE + facts.other_bytes + activations + FP8_SCRATCH_BYTES_PER_WEIGHT * facts.largest_fp8_linear
    if fixed + sum(facts.block_bytes) <= free:
        return None
    for resident in range(layers - 1, -1, -1):
        if fixed + sum(facts.block_bytes[:resident]) + 2 * max(facts.block_bytes[resident:]) <= free:
            return resident
    raise DoesNotFit(fixed + 2 * max(facts.block_bytes), free,
                     "Free GPU memory used by other programs, or use the fp8 text encoder file.")


def _most_resident(free: int, facts: ModelFacts, request: Request, chunked: bool = False) -> int | None:
    for resident in range(len(facts.block_bytes), -1, -1):
        if sampling_bytes(facts, request, resident, chunked) <= free:
            return resident
    return None


def _advice(facts: ModelFacts, request: Request, free: int, chunked: bool) -> str:
    """What to lower: the largest frame count (4k+1) that would fit at this size, else a smaller size."""
    for frames in range(request.frames - 4, 0, -4):
        smaller = replace(request, frames=frames)
        if sampling_bytes(facts, smaller, 0, chunked) <= free:
            return f"Lower num_frames to {frames} or fewer at {request.width}x{request.height}, or lower the size."
    return "Lower the width/height (e.g. a 540p bucket) and num_frames, or free GPU memory used by other programs."
