"""Where and how computation runs: device choice, mixed precision, seeding, and
where the time of a run goes (:class:`StageTimes`).

Entry points turn ``--device`` into a ``torch.device`` once, here; the loops
then use :func:`autocast` without branching on the device themselves.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import TypeVar

import numpy as np
import torch

log = logging.getLogger(__name__)


class DeviceError(Exception):
    """A device the user asked for that this machine does not have."""


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks cuda > mps > cpu; explicit names are checked, not trusted."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present"
            )
    elif device.type == "mps" and not _mps_available():
        raise DeviceError(f"--device {name}: Apple MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"--device {name}: unsupported device type {device.type!r}")
    return device


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """The autocast dtype for ``device``: bf16 where the hardware has it, else fp16 on CUDA.

    On the CPU only processors with native bf16 (AVX-512 BF16 or AMX) gain from
    it (about 2x for our convolutions); elsewhere it would be emulated and slower.
    """
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and _cpu_has_bf16():
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` when a dtype is given, else a no-op context."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# Images per network pass when the user names none (``inference_batch``).
BATCH = {"cpu": 4, "cuda": 16}


def inference_batch(device: torch.device, batch_size: int | None = None) -> int:
    """Images per network pass on ``device``: ``batch_size`` when given, else
    ``BATCH``'s for its type (4 elsewhere).

    On the CPU a 960x540 scan keeps its stream's core busy on its own and every
    stream holds a batch, so a larger batch only adds memory and a longer wait
    for the last one; a GPU needs many images in a pass to fill it.
    """
    return batch_size if batch_size is not None else BATCH.get(device.type, 4)


def inference_streams(
    device: torch.device, streams: int | None = None, batches: int | None = None
) -> tuple[int, int]:
    """(streams, intra-op threads each) for running batches side by side on ``device``.

    On the CPU, batches computed in two threads of one intra-op thread each beat
    one batch at a time over both threads: much of a two-stage inference (small
    inpainting crops, numpy between the stages) does not spread over threads,
    and the other stream fills the gaps: on 2 cores, about 40% more 960x540 scans
    a second (bench/RESULTS.md, `--streams 1` rows). The thread count changes how oneDNN
    sums, so a pixel may differ by one grey level (6 pixels of 1 scan in 200). On
    a GPU or MPS there is always one stream. ``streams`` overrides the choice on
    the CPU; the threads share the cores. There are never more streams than
    ``batches`` (when given): a single large scan keeps every core.
    """
    cores = torch.get_num_threads()
    if device.type != "cpu":
        # Threads share one CUDA stream (no gain), and MPS is not safe to call from
        # two threads at once.
        if streams and streams > 1:
            log.warning("--streams %d: one stream on %s (several help on the CPU only)",
                        streams, device.type)  # fmt: skip
        streams = 1
    elif streams is None:
        streams = min(2, cores)
    streams = max(1, min(streams, batches or streams))
    return streams, max(1, cores // streams)


@contextlib.contextmanager
def intra_op_threads(count: int):
    """Set torch's intra-op thread count for the block, then put it back."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


Job = TypeVar("Job")


def in_order(
    jobs: Iterable[Job], submit: Callable[[Job], Future], depth: int
) -> Iterator[tuple[Job, Future]]:
    """Submit each job, keeping ``depth`` of them running (one per stream), and hand
    back (job, future) oldest first: results come back in input order while the
    next jobs already run."""
    running: deque[tuple[Job, Future]] = deque()
    for job in jobs:
        running.append((job, submit(job)))
        if len(running) >= depth:
            yield running.popleft()
    while running:
        yield running.popleft()


class StageTimes:
    """Seconds spent in each named stage of a run (decode, detect, ...), summed over
    the threads that ran it: wall time and the running thread's CPU time.

    Stages nest: time inside an inner stage is the inner stage's only, so the
    stages of one thread never count a second twice. CPU time is the thread's own
    (``time.thread_time``): on the CPU with one intra-op thread per stream it is
    what the stage cost the machine; work a library hands to threads of its own
    (a GPU, OpenCV's pool) shows in the wall time only.
    """

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        now = (time.perf_counter(), time.thread_time())
        if stack:  # the enclosing stage pauses
            self._charge(stack[-1][0], stack[-1][1], now)
        stack.append([stage, now])
        try:
            yield
        finally:
            now = (time.perf_counter(), time.thread_time())
            name, start = stack.pop()
            self._charge(name, start, now)
            if stack:
                stack[-1][1] = now

    def _charge(self, stage: str, start: tuple[float, float], end: tuple[float, float]) -> None:
        with self._lock:
            self.wall[stage] = self.wall.get(stage, 0.0) + end[0] - start[0]
            self.cpu[stage] = self.cpu.get(stage, 0.0) + end[1] - start[1]

    def __getstate__(self) -> dict:  # copies and pickles carry the numbers, not the lock
        return {"wall": dict(self.wall), "cpu": dict(self.cpu)}

    def __setstate__(self, state: dict) -> None:
        self.__init__()
        self.wall.update(state["wall"])
        self.cpu.update(state["cpu"])

    def reset(self) -> None:
        with self._lock:
            self.wall.clear()
            self.cpu.clear()

    def snapshot(self) -> dict[str, dict[str, float]]:
        """{stage: {"wall_s": ..., "cpu_s": ...}}, rounded to milliseconds."""
        with self._lock:
            return {
                k: {"wall_s": round(self.wall[k], 3), "cpu_s": round(self.cpu[k], 3)}
                for k in self.wall
            }


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Snapshot of every global RNG, storable in a weights-only checkpoint."""
    state = {
        "python": list(random.getstate()[1]),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_pos": int(np.random.get_state()[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`rng_state`."""
    random.setstate((3, tuple(state["python"]), None))
    keys = state["numpy"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _cpu_has_bf16() -> bool:
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((probe and probe()) or (amx and amx()))


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
