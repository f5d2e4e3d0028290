"""Speed of the procedural shapes generator: ``make_shapes(4000)`` against a 2 s budget.

A timing, so it lives here and not in the test suite (a loaded machine fails a timed test).
Reports the median of interleaved repeats; exits with status 1 when the median exceeds the
budget.

Run: python benchmarks/shapes_speed.py [--n 4000] [--repeats 5] [--budget 2.0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from flowforge.data.shapes import make_shapes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=4000, help="shapes per call")
    p.add_argument("--repeats", type=int, default=5, help="timed calls (the median is reported)")
    p.add_argument("--budget", type=float, default=2.0, help="seconds the median may take")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    make_shapes(64, generator=torch.Generator().manual_seed(0))  # warm-up
    seconds = []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        make_shapes(args.n, generator=torch.Generator().manual_seed(i))
        seconds.append(time.perf_counter() - t0)
    median = statistics.median(seconds)
    verdict = "within" if median <= args.budget else "OVER"
    print(
        f"make_shapes({args.n}): median {median:.3f} s over {args.repeats} calls "
        f"(min {min(seconds):.3f}, max {max(seconds):.3f}); {verdict} the {args.budget:g} s budget"
    )
    return 0 if median <= args.budget else 1


if __name__ == "__main__":
    sys.exit(main())
