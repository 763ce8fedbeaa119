"""One step of work replayed as a CUDA graph: the probe's decode step without per-step Python or launches.

    step = Replay(advance, device)     # advance() reads and writes only tensors it holds, in place
    for _ in range(steps):
        step()                         # 1st call eager, 2nd captured and replayed, then replayed

An eager decode step of an 8B model launches thousands of kernels from Python, and on an H200 that took ~100
ms a step where reading the weights takes ~3 ms (BENCHMARKS.md). A CUDA graph records the kernels of one call
once and launches them all again with one call, at fixed addresses: so the step must read its inputs from and
write its outputs to the same tensors every time, make the same shapes, and never wait for the device
(`.item()`, `nonzero`, a copy to the host: each would fail the capture). The engine's decode loop for graphs
(`Engine._decode_fixed`, `cuda_graphs=True`) is written that way; tests/test_probe_engine.py records and
replays its steps on a CPU and checks that they give the eager loop's answers and make no operation that waits
for the device.

Why by hand and not `torch.compile(mode="reduce-overhead")`, which also records CUDA graphs: that compiles
first (over 2 minutes for the 8B decode step on an H200), and it records a graph per new input address,
while each batch of the probe has new cache and prefix tensors. Capturing the eager step costs about one
eager step.

On a CPU (or any device without graphs) `Replay` calls the function each time: the same code, eagerly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from knowpack.errors import KnowpackError


class Replay:
    """`fn()` replayed as a CUDA graph on a CUDA device, called as is elsewhere.

    On CUDA the first call runs `fn` eagerly on a side stream (the warm-up torch asks for before a capture:
    cuBLAS workspaces, the allocator's first blocks; `stream`, or a new one), the second captures it into a
    graph (into `pool`, a `torch.cuda.graph_pool_handle()` that graphs of one engine share, one at a time) and
    replays it, and every later call replays it. Python in `fn` runs at the first two calls only: whatever
    `fn` computes must live in tensors it changes in place. A step that cannot be captured (an operation that
    waits for the device) raises a one-line `KnowpackError` naming the cause.
    """

    def __init__(self, fn: Callable[[], Any], device: Any, pool: Any = None, stream: Any = None):
        self.fn, self.pool, self.stream, self.device = fn, pool, stream, device
        self.cuda = getattr(device, "type", device) == "cuda"
        self.calls = 0
        self.graph = None

    def __call__(self) -> None:
        self.calls += 1
        if not self.cuda:
            self.fn()
            return
        import torch

        with torch.cuda.device(self.device):  # the model's GPU and its current stream, whichever is current
            if self.graph is not None:
                self.graph.replay()
                return
            if self.calls == 1:
                side = self.stream or torch.cuda.Stream(self.device)
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    self.fn()
                torch.cuda.current_stream().wait_stream(side)
                return
            graph = torch.cuda.CUDAGraph()
            try:  # thread_local: what other threads (a progress bar, a tokenizer) do cannot break the capture
                with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
                    self.fn()
            except RuntimeError as error:
                lines = str(error).strip().splitlines()
                first = lines[0] if lines else type(error).__name__
                raise KnowpackError(
                    f"the decode step cannot be captured as a CUDA graph ({first}): run without --cuda-graphs"
                ) from error
            self.graph = graph
            graph.replay()
