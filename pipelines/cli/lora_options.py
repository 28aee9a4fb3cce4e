"""The render command's LoRAs: `--lora FILE[:STRENGTH]`, repeatable, each optionally followed by `--lora-blocks FILTER`.

    --lora style.safetensors                       strength 1
    --lora C:\\loras\\style.safetensors:0.8          a drive colon stays in the path: the text after the last colon
                                                   is the strength only when it is a number
    --lora a.safetensors:0.7 --lora-blocks double --lora b.safetensors:-0.5    two stacked, the first on the
                                                   double blocks only

The block filter is its own flag, given right after the LoRA it restricts, rather than a third field of --lora: its
syntax (`pipelines/lora/block_filter.py`) has colons and spaces of its own (`double:0-9 single:10-19`), which would
make `FILE:STRENGTH:BLOCKS` ambiguous next to a Windows path's drive colon.

Four stages: the argparse types check the syntax (a strength is a number from -10 to 10, the filter's terms are
known); `check_loras` checks each file with the other options, before anything loads (it exists, is a .safetensors
or weights-only pickle, and a safetensors header holds LoRA keys); `read_loras` reads each file with the reader of
the transformer's family (known from its header) before any model loads, so a broken file stops the command at
once; `choose_loras` checks them against the transformer as soon as it is loaded, before the other models (a LoRA
of the other family, or a file holding no LoRA, is refused; block indices the model lacks too), prints one line per
LoRA and gives the `LoraChoice` tuple the samplers apply for each run. Every problem is an OptionError naming the
flag (exit status 2).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

from .job_options import OptionError

MAX_STRENGTH = 10.0
LORA_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")  # = (".safetensors", *checkpoints.PICKLE_SUFFIXES)
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")  # no nan/inf: a strength is a plain number
# What marks a LoRA's tensor names in every convention formats.py reads (kohya/PEFT pairs, alpha, ComfyUI's diff/diff_b,
# LoHa/LoKr factors): a header without any is not a LoRA.
_LORA_KEY = re.compile(r"\.(lora_[AB]\.weight|lora_(down|up)\.weight|alpha|diff|diff_b"
                       r"|hada_w[12]_[ab]|lokr_w[12](_[ab])?)$")
FORMATS = "a LoRA .safetensors file (kohya/musubi, ComfyUI, diffusers or PEFT names) or a weights-only .pt/.ckpt"


@dataclass
class LoraOption:
    """One --lora as given: the file, its strength and the --lora-blocks after it ("" reaches every block)."""

    path: str
    strength: float = 1.0
    blocks: str = ""

    @property
    def name(self) -> str:
        return Path(self.path).name


def parse_lora(text: str) -> LoraOption:
    """FILE[:STRENGTH]: split on the last colon only when what follows is a number (so `C:\\x.safetensors` is a path);
    argparse.ArgumentTypeError for an empty file or a strength outside -10..10."""
    head, colon, tail = text.rpartition(":")
    path, strength = (head, float(tail)) if colon and _NUMBER.match(tail.strip()) else (text, 1.0)
    if not path.strip():
        raise argparse.ArgumentTypeError(f"must be FILE or FILE:STRENGTH, got {text!r}")
    if not -MAX_STRENGTH <= strength <= MAX_STRENGTH:
        raise argparse.ArgumentTypeError(f"the strength of {Path(path).name} must be from {-MAX_STRENGTH:g} to "
                                         f"{MAX_STRENGTH:g}, got {tail.strip()}")
    return LoraOption(path, strength)


class _BlocksAction(argparse.Action):
    """--lora-blocks FILTER: sets the block filter of the --lora given just before it."""

    def __call__(self, parser, namespace, values, option_string=None):
        from ..lora.block_filter import parse_block_filter

        loras = getattr(namespace, "lora", None)
        if not loras:
            raise argparse.ArgumentError(self, "give it after the --lora FILE it restricts")
        last = loras[-1]
        if last.blocks:
            raise argparse.ArgumentError(self, f"{last.name} already has --lora-blocks {last.blocks!r}: give one "
                                         "filter per --lora")
        try:
            parsed = parse_block_filter(values)
        except ValueError as e:
            raise argparse.ArgumentError(self, str(e)) from None
        last.blocks = parsed.text if parsed is not None else ""


def add_lora_options(parser) -> None:
    group = parser.add_argument_group("LoRA (--lora, repeatable: they stack)")
    group.add_argument("--lora", metavar="FILE[:STRENGTH]", action="append", type=parse_lora,
                       help="a LoRA for the transformer's family (13B or 1.5; the demo takes one made for its tiny "
                       f"model), at a strength from {-MAX_STRENGTH:g} to {MAX_STRENGTH:g} after the last colon "
                       "(default: 1); repeat it to stack LoRAs, their deltas add. Any convention: kohya/musubi "
                       "lora_unet_*, ComfyUI, diffusers, PEFT; .safetensors or a weights-only .pt/.ckpt")
    group.add_argument("--lora-blocks", metavar="FILTER", action=_BlocksAction,
                       help="restricts the --lora just before it to some transformer blocks: 'double', 'single' "
                       "(13B only), 'double:0-9,12', several terms separated by spaces, e.g. 'double:0-9 single:0-19' "
                       "(default: all; with a filter the embedders and final layer are left out)")


def check_loras(args) -> None:
    """Each --lora file before anything loads: exists, is a file of a LoRA suffix, and (safetensors) holds LoRA keys
    by its header. A weights-only pickle has no header: it is checked as it is read."""
    from ..weights.checkpoints import CheckpointError, read_safetensors_header

    for lora in args.lora or ():
        path = Path(lora.path)
        if not path.exists():
            number = lora.path.rpartition(":")[2]
            hint = (f" (the text after the last colon is a strength only when it is a number, got {number!r})"
                    if ":" in lora.path and Path(lora.path.rpartition(":")[0]).is_file() else "")
            raise OptionError(f"--lora: {lora.path} does not exist{hint}")
        if not path.is_file():
            raise OptionError(f"--lora: {lora.path} is a folder; expected {FORMATS}")
        if path.suffix.lower() not in LORA_SUFFIXES:
            raise OptionError(f"--lora: {path.name} has an extension no LoRA file has; expected {FORMATS}")
        if path.suffix.lower() != ".safetensors":
            continue
        try:
            header = read_safetensors_header(path)
        except CheckpointError as e:
            raise OptionError(f"--lora: {e}") from None
        if not any(_LORA_KEY.search(key) for key in header):
            raise OptionError(f"--lora: {path.name} is not a LoRA: it holds {_kind(header)}, with no lora_down/"
                              "lora_up, lora_A/lora_B or diff keys")


def _kind(keys) -> str:
    from ..weights.checkpoint_kinds import guess_checkpoint_kind

    return guess_checkpoint_kind(keys)


def read_loras(args) -> list:
    """Every --lora file as `LoraWeights`, read with the reader of the transformer's family (`args.family`); a file
    given twice is read once."""
    if args.family == "hv15":
        from ..hunyuan_video_15.lora_keys import read_lora
    else:
        from ..hunyuan_video_13b.lora_keys import read_lora
    read = {}
    for lora in args.lora or ():
        key = Path(lora.path).resolve()
        if key not in read:
            try:
                read[key] = read_lora(lora.path)
            except ValueError as e:  # LoraFormatError and CheckpointError: a broken file or a variant not applied
                raise OptionError(f"--lora: {e}") from None
    return [read[Path(lora.path).resolve()] for lora in args.lora or ()]


def choose_loras(args, weights: list, model, say) -> tuple:
    """The `LoraChoice` tuple for the loaded transformer's `model`: each LoRA checked against it (targets it cannot
    take are skipped when it is applied, as ComfyUI skips them; the read LoRA is not changed), its block filter
    checked against its blocks; one line per LoRA through `say`. OptionError for a LoRA that fits nothing (the other
    family's, or not a LoRA) or a filter that leaves it nothing."""
    from ..lora.apply import LoraChoice
    from ..lora.block_filter import parse_block_filter
    from ..lora.fit import LoraMismatchError, misfit
    from ..lora.run import check_fits

    chosen = []
    for option, lora in zip(args.lora or (), weights):
        if not lora.targets and not any(_LORA_KEY.search(key) for key in lora.unmatched):
            raise OptionError(f"--lora: {option.name} is not a LoRA: it holds {_kind(lora.unmatched)}")
        try:
            check_fits(lora, model)
        except LoraMismatchError as e:
            raise OptionError(f"--lora: {e}") from None
        fitting = [target for target, low in lora.targets.items() if misfit(model, target, low) is None]
        block_filter = parse_block_filter(option.blocks)
        reached = len(fitting)
        if block_filter is not None:
            try:
                block_filter.check(model)
            except ValueError as e:
                raise OptionError(f"--lora-blocks (of {option.name}): {e}") from None
            reached = sum(block_filter.allows(target) for target in fitting)
            if not reached:
                raise OptionError(f"--lora-blocks {option.blocks!r}: {option.name} has no module in those blocks "
                                  "(the filter would leave it nothing to apply)")
        say(describe(option, lora, reached, len(lora.targets) - len(fitting)))
        chosen.append(LoraChoice(lora, option.strength, option.blocks))
    return tuple(chosen)


def describe(option: LoraOption, lora, reached: int, skipped: int) -> str:
    """One line of the run's info: strength, filter, modules reached, keys not loaded (as ComfyUI's "lora key not
    loaded") and modules skipped (the model lacks them, or their shape differs)."""
    blocks = f", blocks {option.blocks}" if option.blocks else ""
    line = f"LoRA {option.name} x{option.strength:g}{blocks}: {reached} modules"
    unmatched = len(lora.unmatched)
    if unmatched:
        line += f"; {unmatched} keys not loaded (e.g. {lora.unmatched[0]})"
    if skipped:
        line += f"; {skipped} modules skipped (not in this model, or of another shape)"
    return line
