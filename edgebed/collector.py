"""Python's cyclic garbage collector, set for a long-running edgebed process.

An agent driving a thousand nodes makes and drops tens of thousands of small objects a second
(futures, timer handles, records); with the default thresholds (700, 10, 10) the collector ran
about 400 times during such a deploy, for 0.5 s of its 3.5 s of CPU, and a full collection
stopped the event loop for up to 70 ms, which every node's step waited out. A controller
starting 20,000 reservations spent a quarter of its CPU there (10.5 s against 8.0 s, and 6.2
against 9.6, in `scripts/bench/controller_scale.py`). Reference counting frees nearly all of
these objects at once anyway; the collector is only for cycles, which are rare here. Called by
the process entry points when they start (`edgebed agent`, `edgebed controller`, `edgebed
demo`; never at import), and by the benchmarks that run an agent or a controller in their own
process, so that they measure the same thing.
"""

from __future__ import annotations

import gc

# Allocations (less deallocations) between two youngest-generation collections, then how many
# of those per collection of the next generation, and of the oldest.
THRESHOLDS = (10_000, 20, 20)


def tune_collector() -> None:
    """Sets THRESHOLDS for this process (gc.set_threshold)."""
    gc.set_threshold(*THRESHOLDS)
