"""Encoded prompts kept while the text encoders and the prompt are unchanged.

ComfyUI re-runs a node only when its inputs change, but the same prompt reaches the encoders again
through other nodes and other runs (the same negative prompt in every workflow, a sampler setting
changed); running an 8B Llama for it again costs seconds and GPU memory. Keys are the encoders'
identity (a weak reference, so a reloaded or freed model never matches) and the prompt text and
template; values live in CPU memory.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable

MAX_ENTRIES = 16


class PromptCache:
    def __init__(self, max_entries: int = MAX_ENTRIES):
        self.max_entries = max_entries
        self._entries: OrderedDict = OrderedDict()
        self.hits = 0

    def get_or_encode(self, encoders, key: Hashable, encode: Callable[[], object]):
        """The cached result for (encoders, key), else `encode()` (stored, oldest entry dropped)."""
        full_key = (id(encoders), key)
        entry = self._entries.get(full_key)
        if entry is not None and entry[0]() is encoders:
            self._entries.move_to_end(full_key)
            self.hits += 1
            return entry[1]
        value = encode()
        self._entries[full_key] = (weakref.ref(encoders), value)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()


PROMPTS = PromptCache()
