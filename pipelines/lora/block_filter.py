"""Which transformer blocks a LoRA reaches: the optional block filter (issue 20), as one line of text.

Users restrict a LoRA to some blocks (kijai's wrapper has per-block toggles; style LoRAs are often used on the
double blocks only), and a node or a CLI flag needs that as a short string, so the filter is text:

    ""  or "all"              every target of the LoRA (no filter)
    "double"                  every double-stream block (diffusers' `transformer_blocks.*`)
    "single"                  every single-stream block (`single_transformer_blocks.*`, 13B only)
    "double:0-9,12"           double blocks 0 to 9 and 12 (indices from 0, ranges inclusive)
    "double:0-4 single:10-19" terms joined by spaces (or ";"): a target in any of them is kept

With a filter, targets outside the blocks (embedders, token refiner, final layer) are left out, as the wrapper's
block filter does. Indices are checked against the model, so a typo is an error rather than a silent no-op.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

CONTAINERS = {"double": "transformer_blocks", "single": "single_transformer_blocks"}
_TERM = re.compile(r"^(double|single)(?::([0-9,\-]+))?$")


@dataclass(frozen=True)
class BlockFilter:
    """Block indices kept per container (diffusers name); None keeps the container's every block."""

    blocks: tuple[tuple[str, frozenset[int] | None], ...]
    text: str

    def allows(self, module_name: str) -> bool:
        container, _, rest = module_name.partition(".")
        index = rest.partition(".")[0]
        for name, indices in self.blocks:
            if container == name and index.isdigit():
                return indices is None or int(index) in indices
        return False

    def check(self, model: nn.Module) -> None:
        """ValueError when the filter names a block `model` does not have."""
        for kind, container in CONTAINERS.items():
            for name, indices in self.blocks:
                if name != container:
                    continue
                count = len(getattr(model, container, ()))
                if count == 0:
                    raise ValueError(f"block filter {self.text!r}: this model has no {kind} blocks")
                beyond = sorted(i for i in indices or () if i >= count)
                if beyond:
                    raise ValueError(f"block filter {self.text!r}: {kind} block {beyond[0]} does not exist "
                                     f"(the model has {count}: 0-{count - 1})")


def parse_block_filter(text: str | None) -> BlockFilter | None:
    """The filter `text` describes (module docstring), or None for no filter; ValueError on bad syntax."""
    text = (text or "").strip()
    if text.lower() in ("", "all"):
        return None
    blocks: dict[str, frozenset[int] | None] = {}
    for term in re.split(r"[\s;]+", text.lower()):
        match = _TERM.match(term)
        if match is None:
            raise ValueError(f"block filter term {term!r} not understood: use 'double', 'single', 'double:0-9,12' "
                             f"or several such terms separated by spaces")
        container = CONTAINERS[match.group(1)]
        indices = _indices(match.group(2), term) if match.group(2) else None
        known = blocks.get(container, frozenset())
        blocks[container] = None if indices is None or known is None else known | indices
    return BlockFilter(tuple(blocks.items()), " ".join(text.split()))


def _indices(spec: str, term: str) -> frozenset[int]:
    found = set()
    for part in spec.split(","):
        bounds = part.split("-")
        if not part or len(bounds) > 2 or not all(b.isdigit() for b in bounds):
            raise ValueError(f"block filter term {term!r}: {part!r} is not an index or a range like 0-9")
        low, high = int(bounds[0]), int(bounds[-1])
        if low > high:
            raise ValueError(f"block filter term {term!r}: range {part} runs backwards")
        found.update(range(low, high + 1))
    return frozenset(found)
