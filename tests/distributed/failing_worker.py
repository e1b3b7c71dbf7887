"""A 2-rank bilevel run in which rank 1 fails at outer step 3: ``raise`` (an exception) or ``hang`` (it stops
responding). Launched by ``test_failures.py``, which checks how rank 0 ends."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from nestopt import distributed
from tests.distributed import problems as P

FAIL_AT = 3


def main() -> None:
    torch.set_num_threads(1)
    how, timeout = sys.argv[1], float(sys.argv[2])
    here = distributed.init(timeout=timeout)

    def fail(trainer, record) -> None:
        if here.rank == 1 and record["outer_step"] == FAIL_AT:
            print(f"FAILING AT {time.time()!r}", flush=True)
            if how == "raise":
                # a RuntimeError that speaks of timeouts: still this rank's own failure, not a peer's
                raise RuntimeError(f"injected failure at outer step {FAIL_AT}: the socket timed out")
            time.sleep(10 * timeout)  # hangs, until the test kills it

    train, val, _ = P.loaders(P.WORLD)
    trainer = P.trainer(wrap=True, parallel=distributed.DataParallel())
    trainer.fit(train, val, outer_steps=20, progress=False, callback=fail)


if __name__ == "__main__":
    main()
