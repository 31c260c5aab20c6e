"""Where computation runs and where its time goes."""

from __future__ import annotations

import threading
import time

from annot_denoise.runtime import StageTimes


def _busy(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_nested_stages_count_each_second_once() -> None:
    stages = StageTimes()
    with stages("outer"):
        _busy(0.02)
        with stages("inner"):
            _busy(0.05)
        _busy(0.02)
    got = stages.snapshot()
    assert set(got) == {"outer", "inner"}
    # The inner stage's time is its own only: the outer one holds what is left.
    assert got["inner"]["cpu_s"] >= 0.05 and got["outer"]["cpu_s"] >= 0.04
    assert got["outer"]["cpu_s"] < got["inner"]["cpu_s"]


def test_stages_sum_over_threads_and_reset() -> None:
    stages = StageTimes()

    def work() -> None:
        with stages("decode"):
            _busy(0.02)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stages.snapshot()["decode"]["cpu_s"] >= 0.06 - 0.003
    stages.reset()
    assert stages.snapshot() == {}


def test_a_stage_that_raises_is_still_counted() -> None:
    stages = StageTimes()
    try:
        with stages("encode"):
            _busy(0.01)
            raise OSError("disk full")
    except OSError:
        pass
    assert stages.snapshot()["encode"]["cpu_s"] > 0


def test_a_copy_keeps_the_numbers_and_counts_on_its_own() -> None:
    import copy
    import pickle

    stages = StageTimes()
    with stages("detect"):
        _busy(0.01)
    for twin in (copy.deepcopy(stages), pickle.loads(pickle.dumps(stages))):
        assert twin.snapshot() == stages.snapshot()
        with twin("detect"):
            _busy(0.01)
        assert twin.snapshot() != stages.snapshot()


def test_batch_size_is_chosen_for_the_device_unless_given() -> None:
    import torch

    from annot_denoise.runtime import inference_batch

    assert inference_batch(torch.device("cpu")) == 4
    assert inference_batch(torch.device("cuda")) == 16
    assert inference_batch(torch.device("mps")) == 4
    assert inference_batch(torch.device("cuda"), 3) == 3
