"""Record dtypes, integer enums and the bundled kernel arguments (numpy only).

The top-level kernels take their state in a few named tuples of arrays (Numba compiles a
heterogeneous ``NamedTuple`` into a struct passed by value): :class:`World` (what the visits
are drawn from), :class:`Learner` (the tables and their derived search structures),
:class:`PolicyParams`, :class:`ResponseArrays` and :class:`Workspace` (per-visit scratch).
Their array shapes use ``S`` states, ``P`` products, ``W`` the padded value width
(:func:`padded_width`), ``n`` the slate size, ``K`` the largest segment catalogue and ``F`` the
phases of the response (truths that take over at given visits; 1 for a fixed response).

The record dtypes of the arrays (``CELL_DTYPE``, ``TRUTH_DTYPE``, ``METRICS_DTYPE``) are defined
once, in :mod:`rlreco.schema`, which the run directory's Arrow schemas derive from too: the
kernels only index their fields, so they never need the dtype objects.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

#: Bytes per cache line.
LINE = 64
#: float64 per cache line: the group size of every branch-free group loop.
LANES = 8


class _ResponseModel(NamedTuple):
    seed: int = 0
    truth: int = 1
    given: int = 2


class _StateSampling(NamedTuple):
    uniform: int = 0
    empirical: int = 1


class _Outcome(NamedTuple):
    ignored: int = 0
    clicked: int = 1
    bought: int = 2


#: Response model codes: ``seed`` (count distributions), ``truth`` (per-cell probabilities) or
#: ``given`` (the outcomes are set by the caller: online visits).
ResponseModel = _ResponseModel()
#: State sampling codes.
StateSampling = _StateSampling()
#: Outcome of one slate product.
Outcome = _Outcome()


class _TopNSearch(NamedTuple):
    tree: int = 0
    scan: int = 1


#: How greedy slots find the best products: the 8-ary max tree index (``tree``) or a full scan
#: of the value row (``scan``, the O(n_products) baseline kept for benchmarks and tests).
TopNSearch = _TopNSearch()


class _Policy(NamedTuple):
    eps_greedy: int = 0
    decaying: int = 1
    softmax: int = 2
    ucb1: int = 3
    thompson: int = 4


#: Slate policy codes (:mod:`rlreco.engine.kernels.policy`).
Policy = _Policy()


class World(NamedTuple):
    """What visits are drawn from: states, their segment catalogues and state weights.

    Attributes
    ----------
    state_segment : ndarray of int16, shape (S,)
    catalogue_ptr : ndarray of int64, shape (n_segments + 1,)
    catalogue_items : ndarray of int32, shape (nnz,)
        CSR segment catalogues: segment ``g`` offers
        ``catalogue_items[catalogue_ptr[g]:catalogue_ptr[g + 1]]``, at least ``n`` products.
    state_cdf : ndarray of float64, shape (F, S) or (F, 0)
        Per response phase (:class:`ResponseArrays`), cumulative state weights (``empirical``
        sampling) or empty (``uniform``).
    """

    state_segment: np.ndarray
    catalogue_ptr: np.ndarray
    catalogue_items: np.ndarray
    state_cdf: np.ndarray


class Learner(NamedTuple):
    """The learned tables and every structure derived from them (updated in place).

    Attributes
    ----------
    value : ndarray of float64, shape (S, W)
        Cell values, ``-inf`` = unknown; 64-byte aligned rows of whole cache lines, columns
        ``P..W-1`` are ``-inf`` padding (:func:`padded_width`).
    tree : ndarray of float64, shape (S, index_width(W)) or (S, 0)
        Top-n tree index over ``value`` (:mod:`rlreco.engine.kernels.topn`), 64-byte aligned;
        width 0 under ``scan`` search (a field named ``index`` would hide ``tuple.index``).
    depth : int
        Depth of the index (1 under ``scan``).
    cells : ndarray of CELL_DTYPE, shape (S, P)
        Reward sums and counts.
    cache_floor : ndarray of float64, shape (S,)
    cache_size : ndarray of int64, shape (S,)
    cache_items : ndarray of int64, shape (S, CACHE_CAPACITY)
        Candidate caches of the tree search; ``cache_size`` all -1 (empty) whenever ``value``
        was changed outside the kernels.
    state_visits : ndarray of int64, shape (S,)
        Visits per state so far (``decaying``: counted only under that policy).
    state_shown : ndarray of int64, shape (S,)
        Recommendations made per state so far: the row sums of ``reco_count`` (``ucb1``).
    policy : PolicyState
        Structures of ``softmax``, ``ucb1`` and ``thompson``
        (:class:`~rlreco.engine.kernels.policy.PolicyState`, built from the tables by
        :func:`~rlreco.engine.kernels.policy.new_policy_state`; rebuild it whenever ``value``
        or ``cells`` were changed outside the kernels).
    """

    value: np.ndarray
    tree: np.ndarray
    depth: int
    cells: np.ndarray
    cache_floor: np.ndarray
    cache_size: np.ndarray
    cache_items: np.ndarray
    state_visits: np.ndarray
    state_shown: np.ndarray
    policy: Any


class PolicyParams(NamedTuple):
    """How slates are chosen.

    Attributes
    ----------
    code : int
        :data:`Policy` code.
    param : float
        The policy's parameter: ``epsilon``, ``c``, ``tau``, ``c`` or ``sigma``.
    slate_size : int
        ``n``: products per slate.
    search : int
        :data:`TopNSearch` code of the greedy top-n lookups.
    step : float
        Step size of the value updates: 0.0 is the sample average
        ``value += (r - value) / reco_count``, a number in (0, 1] the constant step
        ``value += step * (r - value)``.
    """

    code: int
    param: float
    slate_size: int
    search: int
    step: float = 0.0


class ResponseArrays(NamedTuple):
    """A response model as kernel arrays (see :mod:`rlreco.engine.response`).

    Attributes
    ----------
    model : int
        :data:`ResponseModel` code.
    click_cdf, buy_cdf : ndarray of float64, shape (k,)
        ``seed`` model count distributions.
    truth : ndarray of TRUTH_DTYPE, shape (F, S, P) or (F, S, 0)
        True response per phase and cell (``truth`` model; width 0 under ``seed``).
    best_mu : ndarray of float64, shape (F, S)
        Expected reward of the best slate per phase and state (``truth`` model).
    outcome_reward : ndarray of float64, shape (3,)
        Mean reward per :data:`Outcome` code (ignored, clicked, bought).
    phase_start : ndarray of int64, shape (F,)
        Global visit index at which each phase takes over: ``0`` first, increasing. Visit
        ``v`` is answered (and its regret measured) by the last phase starting at or before it.
    """

    model: int
    click_cdf: np.ndarray
    buy_cdf: np.ndarray
    truth: np.ndarray
    best_mu: np.ndarray
    outcome_reward: np.ndarray
    phase_start: np.ndarray


class Workspace(NamedTuple):
    """Per-visit scratch arrays (:func:`~rlreco.engine.kernels.visit.new_workspace_nb`).

    Attributes
    ----------
    slate : ndarray of int64, shape (n,)
        The chosen products in slot order.
    outcome : ndarray of int8, shape (n,)
        :data:`Outcome` code per slot.
    order : ndarray of int64, shape (n,)
        Slot shuffle of the ``seed`` response.
    previous : ndarray of float64, shape (n,)
        Slate values before the update.
    top_value : ndarray of float64, shape (n + 1,)
    top_product : ndarray of int64, shape (n + 1,)
        The state's best products (slot ``n`` is scratch).
    frontier : ndarray of int64, shape (3, 8**depth)
        Nodes of the top-n query.
    drawn : ndarray of float64, shape (n,)
        The reward drawn for each slot by the update.
    propensity : ndarray of float64, shape (n,)
        The policy's probability of each slot's product (visit logs,
        :mod:`rlreco.engine.kernels.propensity`).
    """

    slate: np.ndarray
    outcome: np.ndarray
    order: np.ndarray
    previous: np.ndarray
    top_value: np.ndarray
    top_product: np.ndarray
    frontier: np.ndarray
    drawn: np.ndarray
    propensity: np.ndarray


def padded_width(n_products: int) -> int:
    """Columns of a padded value row: ``n_products`` rounded up to whole cache lines."""
    return -(-max(n_products, 1) // LANES) * LANES


def aligned_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Uninitialised C-ordered array whose first element starts a cache line.

    numpy's large allocations start 16 bytes into a page; the top-n search relies on every
    group of 8 float64 (8 sibling maxima, 8 neighbouring values) sharing one line.
    """
    dtype = np.dtype(dtype)
    n_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(n_bytes + LINE, dtype=np.uint8)
    offset = (-raw.ctypes.data) % LINE
    return raw[offset : offset + n_bytes].view(dtype).reshape(shape)
