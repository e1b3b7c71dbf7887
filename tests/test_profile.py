"""The peak-memory tracker against storage sizes counted by hand."""

import torch

from nestopt.profile import PeakMemory, peak_memory

F = 4  # bytes per float32


def test_counts_live_storages_and_their_peak():
    w = torch.zeros(1000)
    with PeakMemory(count=[w]) as mem:
        a = torch.ones(2000)
        b = a * 2
        assert mem.current == F * (1000 + 2000 + 2000)
        del a, b
        c = torch.ones(500)  # the first operator after the frees drops them from the count
        assert mem.current == F * (1000 + 500)
    assert (mem.baseline, mem.peak, mem.extra) == (F * 1000, F * 5000, F * 4000)
    del c


def test_views_share_their_storage():
    with PeakMemory() as mem:
        a = torch.ones(1000)
        views = [a[:10], a.view(10, 100), a.t() if a.dim() == 2 else a.unsqueeze(0), a.reshape(100, 10)]
    assert mem.peak == F * 1000
    del views


def test_freed_storages_do_not_accumulate():
    with PeakMemory() as mem:
        for _ in range(50):
            x = torch.ones(1000)
            x = x + 1  # the old x dies when the name is rebound
    assert mem.peak == F * 2000
    del x


def test_backward_allocations_are_seen():
    w = torch.zeros(1000, requires_grad=True)
    x = torch.ones(1000)
    with PeakMemory(count=[w, x]) as mem:
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
    res = peak_memory(lambda: (x + 1).sum(), count=[x])
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
