"""Scalar draws shared by every visit step (one ``numpy.random.Generator`` call each).

``below(m) = min(int(rng.random() * m), m - 1)``: one draw, where Numba's scalar
``rng.integers`` allocates an array per call. ``round2(x) = rint(x * 100) / 100``.
"""

from __future__ import annotations

import numpy as np

from rlreco.engine.kernels.jit import jit


@jit(inline=True)
def round_cents_nb(x: float) -> float:
    """Round to 2 decimals: ``rint(x * 100) / 100``."""
    return np.rint(x * 100.0) / 100.0


@jit(inline=True)
def draw_below_nb(rng: np.random.Generator, m: int) -> int:
    """Uniform integer in ``[0, m)`` from one ``rng.random()`` draw."""
    return min(int(rng.random() * m), m - 1)


@jit(inline=True)
def draw_state_nb(rng: np.random.Generator, state_cdf: np.ndarray, n_states: int) -> int:
    """Draw the state of a visit.

    Parameters
    ----------
    rng : numpy.random.Generator
    state_cdf : ndarray of float64, shape (n_states,) or (0,)
        Cumulative state weights for ``empirical`` sampling; empty for ``uniform``.
    n_states : int
    """
    if state_cdf.shape[0] == 0:
        return draw_below_nb(rng, n_states)
    target = rng.random() * state_cdf[-1]
    return min(int(np.searchsorted(state_cdf, target, side="right")), n_states - 1)


@jit(inline=True)
def draw_count_nb(rng: np.random.Generator, cdf: np.ndarray, cap: int) -> int:
    """Inverse-CDF draw of a count ``0..len(cdf)-1``, capped at ``cap``.

    Parameters
    ----------
    rng : numpy.random.Generator
    cdf : ndarray of float64, shape (k,)
        Cumulative probabilities; ``cdf[-1] == 1``.
    cap : int
    """
    u = rng.random()
    count = 0
    while count < cdf.shape[0] - 1 and u >= cdf[count]:
        count += 1
    return min(count, cap)


@jit(inline=True)
def is_in_nb(product: int, slate: np.ndarray, filled: int) -> bool:
    """Whether ``product`` is among the first ``filled`` entries of ``slate``."""
    found = False
    for j in range(filled):
        found |= slate[j] == product
    return found
