"""During a WAN cut, the side that stays together stays quick: a study stored at one
node is listed by C-FIND at the others of its side, and its copy reaches its owner on
that side, within a bound far above normal (the benchmark, benchmarks/partition.py,
measures the percentiles). Before the replicator ran each kind of work as its own task,
a send hanging on the cut link held up every other send and every catalog pull."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.netns import netns_available
from tests.partition_scenario import run_cut

pytestmark = pytest.mark.skipif(
    netns_available() is not None, reason=f"multi-host tests: {netns_available()}"
)
BOUND = 10.0  # seconds; the target is 2 s (p95), with the link up it is well below 1 s


def test_a_wan_cut_does_not_slow_the_side_that_stays_together(tmp_path: Path) -> None:
    result = run_cut(tmp_path, stores=10, baseline=2, bound=BOUND, log=print)
    assert len(result.during.listed) == len(result.during.delivered) == 10
    assert max(result.during.listed) <= BOUND
    assert max(result.during.delivered) <= BOUND
