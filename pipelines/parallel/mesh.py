"""How the ranks are laid out: a (cfg, ring, ulysses) device mesh and the attention kernel each mode needs.

- "cfg" (2 with `cfg_parallel`, else 1): each half of the ranks runs half of a model call's batch rows, which
  for batched classifier-free guidance is one branch each (`cfg.CfgParallel`);
- "ring" x "ulysses": the ranks of one half share the sequence (the "sequence degree"). Mode "ulysses" puts
  them all on Ulysses (heads exchanged by all-to-all; the fastest in diffusers' benchmark), "ring" all on ring
  attention (keys and values passed round; no head limit), "unified" on both: Ulysses as large as the heads
  allow while ring keeps 2 or more (8 ranks and 24 heads: ulysses 4 x ring 2).

Ring attention merges partial results with their softmax statistics (log-sum-exp), which PyTorch SDPA
(diffusers' "native") does not return, and no kernel returns on a CPU: ring and unified need FlashAttention-2,
cuDNN or SageAttention on a GPU. "Anything" (any sequence length, any head count) exists in diffusers for
pure Ulysses and pure ring only: unified needs the video and the trimmed text token counts divisible by the
sequence degree.
"""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("ulysses", "ring", "unified")
MESH_DIMS = ("cfg", "ring", "ulysses")
CFG_DEGREE = 2  # the two guidance branches, positive and negative
# diffusers backends that run context parallel and return the softmax statistics ring attention merges
RING_KERNELS = frozenset({"flash", "_native_cudnn", "_native_flash", "sage"})


@dataclass(frozen=True)
class MeshPlan:
    """The sizes of the mesh's dimensions and which diffusers "anything" mode the sequence runs in."""

    mode: str
    cfg: int
    ring: int
    ulysses: int
    anything: bool

    @property
    def sequence(self) -> int:
        """Ranks sharing one call's sequence (1: each rank runs its rows whole)."""
        return self.ring * self.ulysses

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.cfg, self.ring, self.ulysses)

    def title(self) -> str:
        return f"cfg {self.cfg} x ring {self.ring} x ulysses {self.ulysses}"

    def context_config(self, mesh):
        """diffusers' ContextParallelConfig on `mesh`; None where no sequence is shared (diffusers needs degree 2+)."""
        from diffusers.models._modeling_parallel import ContextParallelConfig

        if self.sequence == 1:
            return None
        return ContextParallelConfig(ring_degree=self.ring, ulysses_degree=self.ulysses, mesh=mesh,
                                     ulysses_anything=self.anything and self.mode == "ulysses",
                                     ring_anything=self.anything and self.mode == "ring")


def _unified_ulysses(sequence: int, heads: int) -> int:
    """The largest Ulysses degree dividing both the sequence degree and the heads that leaves ring 2 or more."""
    for ulysses in range(sequence // 2, 1, -1):
        if sequence % ulysses == 0 and heads % ulysses == 0:
            return ulysses
    raise ValueError(f"unified attention needs ring and ulysses groups of 2 or more ranks each, ulysses dividing the "
                     f"{heads} heads: {sequence} ranks per branch have no such split; use mode 'ulysses' or 'ring'")


def plan_mesh(world: int, heads: int, mode: str = "ulysses", cfg_parallel: bool = False, anything: bool = True,
              degree: int | None = None) -> MeshPlan:
    """The mesh for `world` ranks running a model of `heads` attention heads; ValueError naming what is wrong.
    `degree` (default: all ranks of a guidance half) is the sequence degree. Ulysses' head count limit is
    `ulysses.check_degree`'s."""
    if mode not in MODES:
        raise ValueError(f"parallel mode must be one of {', '.join(MODES)}; got {mode!r}")
    cfg = CFG_DEGREE if cfg_parallel else 1
    if world % cfg:
        raise ValueError(f"cfg_parallel runs the two guidance branches on two halves of the ranks: it needs an even "
                         f"number of ranks, got {world}")
    sequence = world // cfg
    if degree is not None and degree != sequence:
        halves = " in 2 CFG halves" if cfg_parallel else ""
        raise ValueError(f"degree {degree} does not fit the process group: {world} ranks{halves} share each sequence "
                         f"over {sequence}")
    if sequence == 1 and not (cfg_parallel and mode == "ulysses"):
        raise ValueError(f"mode '{mode}' shares each sequence over 2 or more ranks, got {sequence}"
                         + (" per CFG half" if cfg_parallel else ""))
    if mode == "ulysses":
        return MeshPlan(mode, cfg, 1, sequence, anything)
    if mode == "ring":
        return MeshPlan(mode, cfg, sequence, 1, anything)
    ulysses = _unified_ulysses(sequence, heads)
    return MeshPlan(mode, cfg, sequence // ulysses, ulysses, False)


def check_kernel(mode: str, choice) -> None:
    """ValueError when `mode` needs the softmax statistics and the attention `choice` (speed.attention's
    AttentionChoice) runs a kernel without them."""
    if mode == "ulysses" or choice.dispatcher_name in RING_KERNELS:
        return
    reason = f" ({choice.notice})" if choice.notice else ""
    raise ValueError(f"parallel mode '{mode}' needs an attention kernel that returns its softmax statistics (LSE): "
                     f"attention 'flash' (FlashAttention-2) or 'sage' on a CUDA GPU; attention '{choice.requested}' "
                     f"runs {choice.title.split(',')[0]}{reason}. Use mode 'ulysses' here")


def build_mesh(plan: MeshPlan, device_type: str):
    """The (cfg, ring, ulysses) DeviceMesh over the whole process group (a collective: every rank calls it)."""
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(device_type, plan.shape, mesh_dim_names=MESH_DIMS)
