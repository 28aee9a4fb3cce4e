"""What crosses between a worker pool and its workers.

Messages are pickled by value with tensors moved to the CPU: no shared-memory handle or CUDA IPC ties a message to
its sender, so a worker that dies leaves nothing behind in ComfyUI's process, and a LoRA of a thousand tensors
needs no thousand file descriptors. Objects a worker keeps between runs (read LoRAs, an upsampler) are sent once:
a job names them by a key and carries the bytes of the new ones only, so the same object comes back to the worker
every run (a LoRA the worker has installed then only gets its strength written).

`StopAgreement` is where the ranks of a cancelled run stop: all at the same step end, so that none is left
waiting in a collective for a rank that has gone.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import torch


class _Pickler(pickle.Pickler):
    def __init__(self, file, kept: dict[int, Any]):
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self._kept = kept

    def persistent_id(self, obj):
        return id(obj) if id(obj) in self._kept else None

    def reducer_override(self, obj):
        if isinstance(obj, torch.Tensor) and obj.device.type != "cpu":
            moved = obj.detach().cpu()
            if isinstance(obj, torch.nn.Parameter):
                moved = torch.nn.Parameter(moved, obj.requires_grad)
            return moved.__reduce_ex__(pickle.HIGHEST_PROTOCOL)
        return NotImplemented


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, kept: dict[int, Any]):
        super().__init__(file)
        self._kept = kept

    def persistent_load(self, key):
        return self._kept[key]


def dumps(obj, kept: dict[int, Any] | None = None) -> bytes:
    """`obj` by value, except the objects of `kept` (key: id -> object), which are written as their key."""
    buffer = io.BytesIO()
    _Pickler(buffer, kept or {}).dump(obj)
    return buffer.getvalue()


def loads(data: bytes, kept: dict[int, Any] | None = None):
    return _Unpickler(io.BytesIO(data), kept or {}).load()


class KeptObjects:
    """The sender's side: which kept objects the receivers hold, so a job carries only the new ones."""

    def __init__(self):
        self._held: dict[int, Any] = {}  # strong references: a key stays that object's while both sides keep it

    def job(self, job, keep=()) -> bytes:
        """A job message: the new kept objects by value, the keys of all the job keeps, the job itself."""
        keep = {id(obj): obj for obj in keep}
        new = {key: obj for key, obj in keep.items() if key not in self._held}
        self._held = keep
        return dumps((dumps(new), tuple(keep), dumps(job, keep)))


def receive_job(data: bytes, kept: dict[int, Any]):
    """The receiver's side of `KeptObjects.job`: updates `kept` in place (objects no longer used are dropped) and
    returns the job with its kept objects in place."""
    new, keys, job = loads(data)
    kept.update(loads(new))
    for key in set(kept) - set(keys):
        del kept[key]
    return loads(job, kept)


class StopAgreement:
    """The step end at which every rank of a run stops when it is cancelled.

    Ranks run in step with each other (every step's attention exchanges tokens among all of them), so when
    rank 0 learns of a cancel at the end of step k, another rank may at most have passed that same step end.
    Rank 0 then fixes the stop at k, or at k + 1 if some rank already went on; each rank checks at each step
    end (`passes`), under one lock, so a rank stops exactly where the others do and no collective is left
    half-joined. Before the first step the other ranks wait for rank 0's answer (`opened`), so a cancel that came
    while the model loaded stops every rank before anything moves to a GPU. The parent resets it between runs,
    while every worker waits for its next job."""

    def __init__(self, lock, stop_at, passed, opened):
        self.lock, self._stop_at, self._passed, self.opened = lock, stop_at, passed, opened

    @classmethod
    def create(cls, context, world: int) -> StopAgreement:
        return cls(context.Lock(), context.Value("i", -1, lock=False), context.Array("i", [-1] * world, lock=False),
                   context.Event())

    def parts(self) -> tuple:
        """What a spawned worker is given to rebuild it (`StopAgreement(*parts)`)."""
        return self.lock, self._stop_at, self._passed, self.opened

    def reset(self) -> None:
        with self.lock:
            self._stop_at.value = -1
            self._passed[:] = [-1] * len(self._passed)
            self.opened.clear()

    @property
    def agreed(self) -> bool:
        return self._stop_at.value >= 0

    def request(self, rank: int, step: int) -> None:
        """Rank `rank`, at the end of step `step`, was told to stop (rank 0, by the parent)."""
        with self.lock:
            if self._stop_at.value < 0:
                ahead = max((p for r, p in enumerate(self._passed) if r != rank), default=-1)
                self._stop_at.value = step if ahead < step else step + 1

    def passes(self, rank: int, step: int) -> bool:
        """Whether rank `rank` goes on past the end of step `step` (0: before the first)."""
        with self.lock:
            if 0 <= self._stop_at.value <= step:
                return False
            self._passed[rank] = step
            return True
