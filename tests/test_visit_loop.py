"""The visit loop is compiled per policy family: a run pays only for the loop it uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: warms the eps-greedy loop up in a fresh process, then lists what else got compiled or loaded
_PROBE = """
import json
from rlreco.engine.kernels import propensity, sum_tree, thompson, ucb1_cache, visit_loop
from rlreco.engine.warmup import warm_up_simulation
warm_up_simulation(("eps-greedy", "decaying"))
others = {
    "softmax": sum_tree.choose_softmax_slate_nb,
    "ucb1": ucb1_cache.choose_ucb1_slate_nb,
    "thompson": thompson.choose_thompson_slate_nb,
    "propensities": propensity.slate_propensities_nb,
}
print(json.dumps({
    "loops": sorted(map(list, visit_loop._LOOPS)),
    "others": {name: len(kernel.signatures) for name, kernel in others.items()},
}))
"""


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="no compilation")
def test_a_greedy_run_builds_only_the_greedy_loop() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    # decaying shares eps-greedy's loop; no log: the loop without logging
    assert found["loops"] == [[0, False]]
    # the other policies' kernels were pruned before typing: never compiled nor loaded
    assert found["others"] == {"softmax": 0, "ucb1": 0, "thompson": 0, "propensities": 0}


def test_every_policy_code_has_a_loop_family() -> None:
    from rlreco.engine.kernels.records import Policy
    from rlreco.engine.kernels.visit_loop import LOOP_FAMILY

    assert sorted(LOOP_FAMILY) == sorted(Policy)
    assert len(set(LOOP_FAMILY.values())) == 4
