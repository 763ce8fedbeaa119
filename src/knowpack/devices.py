"""Where tensors live: the device of this process, and a guard that catches tensors made on the wrong one.

**This process's device.** Under `accelerate launch` / `torchrun` every process is one rank with its own
accelerator: `cuda:LOCAL_RANK`, never plain `cuda` (which is `cuda:0` in every process). `process_device()`
resolves a requested device ("cuda", "cpu", None for "the best there is") to this rank's, and
`is_main_process()` says whether this process owns the run folder (rank 0).

**The device guard.** On a GPU a tensor made without `device=` lands on the CPU and the next operation with
a tensor of the model fails ("Expected all tensors to be on the same device"). On a CPU-only machine nothing
fails, because everything is on the CPU. `device_guard()` makes such a bug fail on the CPU too:

    with device_guard():
        probe(model, tok, facts)        # raises DeviceMismatch where a GPU would have raised

Inside it, every tensor that knowpack's own code makes with a factory (`torch.tensor`, `arange`, `zeros`,
...) and no `device=`, and every `.cpu()` copy it makes, is marked as "host"; whatever is computed only from
host tensors is host too; `.to(device)` clears the mark. An operation that mixes a host tensor with one of
the model (its parameters and everything computed from them) raises `DeviceMismatch`, exactly where
PyTorch on a GPU would raise. What PyTorch allows across devices stays allowed: 0-dimensional host tensors
(scalars) and host index tensors in `tensor[index]`. Tensors made by other libraries are left alone (their
device handling is theirs). `KNOWPACK_DEVICE_GUARD=1` turns it on for a whole `knowpack` command; the test
suite runs every test under it.
"""

from __future__ import annotations

import os
import sys
import weakref
from contextlib import contextmanager
from typing import Any

from knowpack.errors import KnowpackError

GUARD_ENV = "KNOWPACK_DEVICE_GUARD"


def local_rank() -> int:
    """This process's rank on its machine (0 without a launcher)."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def world_size() -> int:
    """How many processes a launcher started (1 without one)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    """This process's global rank (0 without a launcher)."""
    return int(os.environ.get("RANK", "0") or 0)


def is_main_process() -> bool:
    """True in the process that owns shared results (global rank 0, or the only process)."""
    return rank() == 0


def process_device(device: str | None = None) -> str:
    """The device this process should use for `device` ("cpu", "cuda", "cuda:1", "mps", "auto" or None).

    None picks CUDA when there is one, else CPU. Plain "cuda" becomes `cuda:LOCAL_RANK` when several processes
    were launched, so that ranks never share a GPU; an explicit index is kept as given.
    """
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and world_size() > 1:
        return f"cuda:{local_rank()}"
    return device


class DeviceMismatch(RuntimeError):
    """A tensor made on the host met a tensor of the model: on a GPU this operation would fail."""


def _factories() -> set[Any]:
    import torch

    try:  # the list torch.set_default_device itself uses
        from torch.utils._device import _device_constructors

        return set(_device_constructors())
    except ImportError:  # pragma: no cover - older torch
        names = [
            "tensor",
            "as_tensor",
            "arange",
            "zeros",
            "ones",
            "full",
            "empty",
            "rand",
            "randn",
            "randint",
        ]
        return {getattr(torch, n) for n in names}


def _made_by(owners: tuple[str, ...]) -> bool:
    """Whether the factory call being intercepted was made by code of the `owners` modules (knowpack's own,
    not torch's, not a library's): the first frame outside torch decides."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(("torch", "knowpack.devices")):
        frame = frame.f_back
    return frame is not None and frame.f_globals.get("__name__", "").startswith(owners)


@contextmanager
def device_guard(owners: tuple[str, ...] = ("knowpack",)):
    """Raise `DeviceMismatch` where a tensor made without `device=` meets the model's (see the module doc).
    `owners`: the modules whose factory calls are checked (by name prefix)."""
    from torch.overrides import TorchFunctionMode

    tracker = _HostTracker(owners)

    class Guard(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            tracker.follow(func, args, kwargs, out)
            return out

    global _guards
    _guards += 1
    try:
        with Guard():
            yield
    finally:
        _guards -= 1


_guards = 0  # device guards open now (nested ones count)


def guarding() -> bool:
    """Whether a `device_guard` is open: a TorchFunctionMode in Python, which `torch.compile` cannot trace."""
    return _guards > 0


class _HostTracker:
    """The tensors on the host inside a `device_guard`, by identity, and what each operation does to them:
    marks what knowpack's code makes there, clears what is moved off, raises where one meets the model's."""

    def __init__(self, owners: tuple[str, ...]):
        import torch
        from torch.utils._pytree import tree_leaves

        # held here, not imported per call: `follow` runs for every torch operation inside the guard
        self.Tensor, self.dtype, self.leaves = torch.Tensor, torch.dtype, tree_leaves
        self.owners = owners
        self.factories = _factories()
        self.host: dict[int, weakref.ref] = {}  # id -> the tensor (a WeakSet would compare with ==)
        self.moves = {torch.Tensor.to, torch.Tensor.cuda}
        self.indexing = {
            torch.Tensor.__getitem__,
            torch.Tensor.__setitem__,
            torch.Tensor.copy_,
        }  # host allowed
        self.cpu = torch.Tensor.cpu

    def follow(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        """Update the marks for `out = func(*args, **kwargs)`, or raise `DeviceMismatch`."""
        if func in self.factories:
            if kwargs.get("device") is None and _made_by(self.owners):
                self.mark(out)
        elif func is self.cpu:
            if _made_by(self.owners):
                self.mark(out)
        elif func in self.moves:
            self._moved(args, kwargs, out)
        elif self.host:  # nothing is on the host: nothing to check (the common case, kept cheap)
            self._check(func, args, kwargs, out)

    def _moved(self, args: tuple, kwargs: dict, out: Any) -> None:
        target = kwargs.get("device", next((a for a in args[1:] if not isinstance(a, self.dtype)), None))
        if isinstance(target, str) and (target == "cpu" or target.startswith("cpu:")):
            if _made_by(self.owners):  # sent to the host by name: as host as a tensor made there
                self.mark(out)
        elif target is not None:
            self.unmark(out)
        elif self.is_host(args[0]):
            self.mark(out)

    def _check(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        operands = args[:1] if func in self.indexing else (*args, *kwargs.values())
        marked, model_side = [], False
        for t in self._tensors(operands):
            if self.is_host(t):
                marked.append(t)
            else:
                model_side = True
        if marked and model_side:
            big = [t for t in marked if t.dim() > 0]
            if big:
                raise DeviceMismatch(
                    f"{_name(func)} mixes a tensor made without device= (shape {tuple(big[0].shape)}) "
                    "with one of the model's: on a GPU this fails; create it with device=..."
                )
        elif marked:  # host only (for indexing: a host tensor indexed): the result is on the host too
            self.mark(out)

    def is_host(self, t: Any) -> bool:
        ref = self.host.get(id(t)) if isinstance(t, self.Tensor) else None
        return ref is not None and ref() is t

    def mark(self, out: Any) -> None:
        for t in self.leaves(out):
            if isinstance(t, self.Tensor):
                key = id(t)
                self.host[key] = weakref.ref(t, lambda _, key=key: self.host.pop(key, None))

    def _tensors(self, operands: tuple) -> Any:
        for a in operands:
            if isinstance(a, self.Tensor):
                yield a
            elif isinstance(a, (list, tuple)):
                yield from (t for t in self.leaves(a) if isinstance(t, self.Tensor))

    def unmark(self, out: Any) -> None:
        for t in self.leaves(out):
            if self.is_host(t):
                del self.host[id(t)]


def _name(func: Any) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))


@contextmanager
def guard_from_env():
    """`device_guard()` when `KNOWPACK_DEVICE_GUARD=1`, else nothing (the CLI wraps every verb in this)."""
    if os.environ.get(GUARD_ENV, "") not in ("", "0"):
        with device_guard():
            yield
    else:
        yield


def start_processes(device: str | None) -> None:
    """Join the process group when a launcher started several processes (gloo on CPU, NCCL on GPUs), so that
    `barrier()` and `broadcast()` work before the Trainer sets it up; nothing with one process."""
    if world_size() > 1:
        from accelerate import PartialState

        PartialState(cpu=device == "cpu")


def barrier() -> None:
    """Wait for every process (nothing with one process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast(value: Any) -> Any:
    """`value` as rank 0 has it, in every process (a picklable object; itself with one process)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def set_threads(threads: int) -> None:
    """Use `threads` CPU threads for torch's operations (`knowpack --threads`)."""
    if threads < 1:
        raise KnowpackError("--threads must be >= 1")
    import torch

    torch.set_num_threads(threads)


def free_memory(device: Any) -> int | None:
    """Bytes a batch may take on a CUDA device now: free to the driver (`torch.cuda.mem_get_info`) plus what
    torch's allocator holds unused; None elsewhere (a CPU's memory is not what sizes a batch there)."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return None
    held = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(torch.cuda.mem_get_info(device)[0] + held)
