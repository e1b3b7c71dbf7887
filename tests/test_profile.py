"""The peak-memory measurements against storage sizes counted by hand: the allocator (the default) and the
storage tracker (``trace=True``), and how the tracker perturbs autograd."""

import pytest
import torch

from nestopt.errors import UnsupportedError
from nestopt.profile import PeakMemory, peak_memory

F = 4  # bytes per float32
SCALARS = 64  # the allocator also sees the few bytes of wrapped Python scalars (``a * 2``)


@pytest.fixture(autouse=True)
def _on_the_cpu():
    """The hand counts are of CPU allocations (CUDA's caching allocator rounds its blocks), also under
    ``pytest --device cuda``."""
    with torch.device("cpu"):
        yield


@pytest.mark.parametrize("trace", [False, True], ids=["allocator", "traced"])
def test_both_modes_agree_with_a_hand_count(trace):
    w = torch.zeros(1000)
    with PeakMemory(count=[w], trace=trace) as mem:
        a = torch.ones(2000)
        b = a * 2
        del a, b
        c = torch.ones(3000)  # less than a and b together: not a new peak
        d = torch.ones(500)
        del d
    assert mem.baseline == F * 1000
    assert F * 5000 <= mem.peak <= F * 5000 + SCALARS
    assert F * 4000 <= mem.current <= F * 4000 + SCALARS  # w and c at the end
    del c


def test_the_allocator_mode_counts_counted_tensors_for_the_whole_block_and_reads_after_it():
    w, x = torch.zeros(1000), torch.zeros(2000)
    counted = [w, x]
    with PeakMemory(count=counted) as mem:
        del x
        counted.clear()  # the last reference: x dies inside the block, but the allocator did not see it made
        y = torch.ones(1500)
        with pytest.raises(UnsupportedError, match="after the block"):
            _ = mem.current
    assert mem.baseline == F * 3000 and mem.peak == F * 4500 and mem.current == F * 4500
    del y


def test_the_tracker_changes_how_autograd_sums_gradients_and_the_allocator_does_not():
    # two contributions to the gradient of w: autograd sums them in the first one's buffer, except under a
    # Python dispatch mode (the tracker), where the sum is a third buffer
    peaks = {}
    for trace in (False, True):
        w = torch.zeros(100_000, requires_grad=True)
        with PeakMemory(count=[w], trace=trace) as mem:
            ((w * 2).sum() + (w * 3).sum()).backward()
        peaks[trace] = mem.extra
    assert F * 200_000 <= peaks[False] <= F * 200_000 + SCALARS
    assert F * 300_000 <= peaks[True] <= F * 300_000 + SCALARS


def test_the_allocator_mode_cannot_run_inside_another_profiler():
    outer = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
    with outer, pytest.raises(UnsupportedError, match="trace=True"), PeakMemory():
        torch.ones(3)


def test_the_tracker_counts_live_storages_and_their_peak():
    w = torch.zeros(1000)
    with PeakMemory(count=[w], trace=True) as mem:
        a = torch.ones(2000)
        b = a * 2
        assert mem.current == F * (1000 + 2000 + 2000)
        del a, b
        c = torch.ones(500)  # the first operator after the frees drops them from the count
        assert mem.current == F * (1000 + 500)
    assert (mem.baseline, mem.peak, mem.extra) == (F * 1000, F * 5000, F * 4000)
    del c


@pytest.mark.parametrize("trace", [False, True], ids=["allocator", "traced"])
def test_views_share_their_storage(trace):
    with PeakMemory(trace=trace) as mem:
        a = torch.ones(1000)
        views = [a[:10], a.view(10, 100), a.t() if a.dim() == 2 else a.unsqueeze(0), a.reshape(100, 10)]
    assert mem.peak == F * 1000
    del views


@pytest.mark.parametrize("trace", [False, True], ids=["allocator", "traced"])
def test_freed_storages_do_not_accumulate(trace):
    with PeakMemory(trace=trace) as mem:
        for _ in range(50):
            x = torch.ones(1000)
            x = x + 1  # the old x dies when the name is rebound
    assert F * 2000 <= mem.peak <= F * 2000 + SCALARS
    del x


def test_backward_allocations_are_seen():
    w = torch.zeros(1000, requires_grad=True)
    x = torch.ones(1000)
    with PeakMemory(count=[w, x], trace=True) as mem:
        loss = (w * x).sum()
        loss.backward()
    # alive: the counted tensors, the scalar loss and the gradient of w (made by the backward pass); the
    # backward pass's other temporaries (the seed gradient of the loss) are gone
    assert w.grad is not None
    assert mem.current == F * (1000 + 1000 + 1 + 1000)
    # the peak: inside the backward pass, with the seed gradient (one float) still alive
    assert mem.peak == F * (1000 + 1000 + 1 + 1 + 1000)


def test_peak_memory_reports_total_baseline_and_extra():
    x = torch.zeros(256)
    res = peak_memory(lambda: (x + x).sum(), count=[x])
    assert res == {"total": F * (256 + 256 + 1), "baseline": F * 256, "extra": F * (256 + 1)}


def _make_temporaries(w):
    a = w * 2  # 4000 bytes, alive at the peak
    b = a.exp()  # 4000 bytes, alive at the peak
    return b.sum()


def test_breakdown_names_what_was_alive_at_the_peak():
    w = torch.zeros(1000)
    with PeakMemory(count=[w], trace=True) as mem:
        _make_temporaries(w)
        small = torch.ones(10)
    found = dict(mem.breakdown())
    assert mem.peak == F * 3000 + F  # w, a, b and the sum alive together
    assert found["counted"] == F * 1000
    origins = {what.split(" <- ")[0]: (what, n) for what, n in found.items()}
    assert origins["aten.mul.Tensor"][1] == F * 1000 and "_make_temporaries" in origins["aten.mul.Tensor"][0]
    assert origins["aten.exp.default"][1] == F * 1000
    assert sum(found.values()) == mem.peak
    del small


def test_breakdown_needs_trace():
    with PeakMemory() as mem:
        torch.ones(3)
    try:
        mem.breakdown()
    except RuntimeError as err:
        assert "trace=True" in str(err)
    else:
        raise AssertionError("breakdown without trace must raise")
