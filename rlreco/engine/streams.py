"""Independent random streams derived from one seed.

Each consumer gets its own ``numpy.random.Generator(PCG64)`` from ``SeedSequence(seed,
spawn_key=key)``, so adding draws to one stream never shifts another, and a sweep cell's stream
depends only on the sweep seed and the cell's coordinates.
"""

from __future__ import annotations

import numpy as np

#: spawn-key prefixes of the streams rlreco uses
TABLES = 0
SIMULATION = 1
SWEEP = 2
ONLINE = 3
EVALUATION = 4


def generator(seed: int, *key: int) -> np.random.Generator:
    """PCG64 generator of the stream ``key`` under ``seed``.

    Parameters
    ----------
    seed : int
        Run or sweep seed (>= 0).
    *key : int
        Stream path, e.g. ``(SIMULATION,)`` or ``(SWEEP, setting, replicate)``.
    """
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))
