"""A visit's feedback: the response to its slate, the table update and the metric sums.

Steps 3 and 4 of a visit (:mod:`rlreco.engine.kernels.visit` states the draws and their
order): :func:`respond_update_record_nb` is the one kernel every visit goes through after its
slate is chosen, in the fused loop and in the online visit (:func:`play_slate_nb`). Besides
the cells it keeps the learner's top-n search exact: the tree index above the changed products
(:func:`~rlreco.engine.kernels.topn.repair_index_nb`) and the state's candidate cache
(:func:`~rlreco.engine.kernels.candidate_cache.refresh_cache_nb`).
"""

from __future__ import annotations

import numpy as np

from rlreco.engine.kernels.candidate_cache import refresh_cache_nb
from rlreco.engine.kernels.draw import draw_below_nb, draw_count_nb, round_cents_nb
from rlreco.engine.kernels.jit import jit
from rlreco.engine.kernels.records import (
    Learner,
    Outcome,
    PolicyParams,
    ResponseArrays,
    ResponseModel,
    TopNSearch,
    Workspace,
)
from rlreco.engine.kernels.topn import repair_index_nb


@jit(inline=True)
def pick_slots_nb(
    rng: np.random.Generator, picks: int, code: int, outcome: np.ndarray, order: np.ndarray
) -> None:
    """Mark ``picks`` distinct uniform slots with ``code`` (partial Fisher-Yates on ``order``).

    Parameters
    ----------
    rng : numpy.random.Generator
    picks : int
        Number of slots, ``<= len(outcome)``.
    code : int
        :data:`Outcome` code written into the picked slots.
    outcome : ndarray of int8, shape (n,)
        Modified in place.
    order : ndarray of int64, shape (n,)
        Workspace.
    """
    n = outcome.shape[0]
    for i in range(n):
        order[i] = i
    for i in range(picks):
        j = i + draw_below_nb(rng, n - i)
        order[i], order[j] = order[j], order[i]
        outcome[order[i]] = code


@jit(inline=True)
def respond_seed_nb(
    rng: np.random.Generator,
    click_cdf: np.ndarray,
    buy_cdf: np.ndarray,
    outcome: np.ndarray,
    order: np.ndarray,
) -> tuple[int, int]:
    """Outcomes of one slate under the ``seed`` model (step 3 of the module docstring).

    Parameters
    ----------
    rng : numpy.random.Generator
    click_cdf, buy_cdf : ndarray of float64, shape (k,)
        Cumulative distributions of the click and purchase counts.
    outcome : ndarray of int8, shape (n,)
        Output: :data:`Outcome` code per slot.
    order : ndarray of int64, shape (n,)
        Workspace.

    Returns
    -------
    (int, int)
        Clicks ``C`` and purchases ``B``.
    """
    n = outcome.shape[0]
    clicks = draw_count_nb(rng, click_cdf, n)
    buys = draw_count_nb(rng, buy_cdf, n)
    for i in range(n):
        outcome[i] = Outcome.ignored
    pick_slots_nb(rng, clicks, Outcome.clicked, outcome, order)
    # purchases are marked last: a purchase overrides a click
    pick_slots_nb(rng, buys, Outcome.bought, outcome, order)
    return clicks, buys


@jit(inline=True)
def respond_truth_nb(
    rng: np.random.Generator,
    truth: np.ndarray,
    outcome_reward: np.ndarray,
    state: int,
    slate: np.ndarray,
    outcome: np.ndarray,
) -> tuple[int, int, float]:
    """Outcomes of one slate under known per-product probabilities (step 3).

    Parameters
    ----------
    rng : numpy.random.Generator
    truth : ndarray of TRUTH_DTYPE, shape (S, P)
    outcome_reward : ndarray of float64, shape (3,)
        Mean reward per :data:`Outcome` code.
    state : int
    slate : ndarray of int64, shape (n,)
    outcome : ndarray of int8, shape (n,)
        Output: :data:`Outcome` code per slot.

    Returns
    -------
    (int, int, float)
        Click events, purchases, and the slate's expected reward: the sum in slot order of
        ``mu = p_buy * R_buy + (1 - p_buy) * (p_click * R_click + (1 - p_click) * R_ignore)``
        (the expression of :func:`rlreco.engine.response.expected_reward`).
    """
    clicks = 0
    buys = 0
    shown_mu = 0.0
    for i in range(slate.shape[0]):
        cell = truth[state, slate[i]]
        p_click = cell["p_click"]
        p_buy = cell["p_buy"]
        click = rng.random() < p_click
        buy = rng.random() < p_buy
        clicks += click
        buys += buy
        shown_mu += p_buy * outcome_reward[Outcome.bought] + (1.0 - p_buy) * (
            p_click * outcome_reward[Outcome.clicked]
            + (1.0 - p_click) * outcome_reward[Outcome.ignored]
        )
        # bought beats clicked beats ignored (codes 2 > 1 > 0), without a random branch
        outcome[i] = max(Outcome.bought * buy, Outcome.clicked * click)
    return clicks, buys, shown_mu


@jit(inline=True)
def update_cells_nb(
    rng: np.random.Generator,
    state: int,
    value: np.ndarray,
    cells: np.ndarray,
    outcome_reward: np.ndarray,
    slate: np.ndarray,
    outcome: np.ndarray,
    previous: np.ndarray,
    step: float,
    drawn: np.ndarray,
) -> float:
    """Bookkeeping, rewards and incremental means of one slate (step 4).

    Parameters
    ----------
    rng : numpy.random.Generator
    state : int
    value : ndarray of float64, shape (S, W)
    cells : ndarray of CELL_DTYPE, shape (S, P)
        Updated in place.
    outcome_reward : ndarray of float64, shape (3,)
        Mean reward per :data:`Outcome` code.
    slate : ndarray of int64, shape (n,)
    outcome : ndarray of int8, shape (n,)
    previous : ndarray of float64, shape (n,)
        Output: the slate's values before the update.
    step : float
        0.0: the sample average (``1/reco_count``); else the constant step size.
    drawn : ndarray of float64, shape (n,)
        Output: the reward drawn for each slot.

    Returns
    -------
    float
        Sum of the drawn rewards, in slot order.
    """
    total = 0.0
    for i in range(slate.shape[0]):
        product = slate[i]
        cell = cells[state, product]
        mean = value[state, product]
        previous[i] = mean
        if mean == -np.inf:
            mean = 0.0
            cell["reward"] = round_cents_nb(rng.standard_normal())
        cell["reco_count"] += 1
        cell["count"] += 1
        reward = round_cents_nb(rng.normal(outcome_reward[outcome[i]], 1.0))
        drawn[i] = reward
        cell["reward"] += reward
        if step > 0.0:
            mean += step * (reward - mean)
        else:
            mean += (reward - mean) / cell["reco_count"]
        value[state, product] = mean
        total += reward
    return total


@jit(inline=True)
def record_visit_nb(
    metrics: np.ndarray,
    block: int,
    slots: int,
    reward: float,
    clicks: int,
    buys: int,
    explored: int,
    knows_regret: bool,
    regret: float,
) -> None:
    """Add one visit to ``metrics[block]`` (METRICS_DTYPE; regret only under a known truth)."""
    row = metrics[block]
    row["visits"] += 1
    row["slots"] += slots
    row["reward_sum"] += reward
    row["clicks"] += clicks
    row["buys"] += buys
    row["explored"] += explored
    if knows_regret:
        row["regret_visits"] += 1
        row["regret_sum"] += regret


@jit(inline=True)
def respond_update_record_nb(
    rng: np.random.Generator,
    state: int,
    explored: int,
    model: int,
    click_cdf: np.ndarray,
    buy_cdf: np.ndarray,
    truth: np.ndarray,
    best_mu: np.ndarray,
    outcome_reward: np.ndarray,
    value: np.ndarray,
    index: np.ndarray,
    depth: int,
    search: int,
    step: float,
    cells: np.ndarray,
    cache_floor: np.ndarray,
    cache_size: np.ndarray,
    cache_items: np.ndarray,
    state_shown: np.ndarray,
    slate: np.ndarray,
    outcome: np.ndarray,
    order: np.ndarray,
    previous: np.ndarray,
    drawn: np.ndarray,
    metrics: np.ndarray,
    block: int,
) -> None:
    """Steps 3 and 4 of a visit whose slate is in ``slate``, and its metric sums.

    The one kernel every visit goes through after its slate is chosen: the fused loop
    (:func:`~rlreco.engine.kernels.visit.simulate_visits_nb`) and the online visit
    (:func:`play_slate_nb`). It takes the bundles' arrays one by one because it is inlined: a bundle
    bound as the parameter of an inlined kernel costs an atomic reference-count update per array in
    it, on every visit.
    Under the ``given`` response model ``outcome`` is read instead of drawn, and its clicks and
    purchases are counted from it.

    Parameters
    ----------
    rng : numpy.random.Generator
    state : int
    explored : int
        Explored slots of the slate.
    model, click_cdf, buy_cdf, truth, best_mu, outcome_reward
        As in :class:`~rlreco.engine.kernels.records.ResponseArrays`.
    value, index, depth, cells, cache_floor, cache_size, cache_items, state_shown
        As in :class:`~rlreco.engine.kernels.records.Learner`; updated in place.
    search : int
        :data:`TopNSearch` code (the index and caches are kept under ``tree`` only).
    step : float
        :attr:`~rlreco.engine.kernels.records.PolicyParams.step`.
    slate, outcome, order, previous, drawn
        As in :class:`~rlreco.engine.kernels.records.Workspace`.
    metrics : ndarray of METRICS_DTYPE, shape (n_blocks,)
    block : int
        Row of ``metrics`` the visit is added to.
    """
    shown_mu = 0.0
    if model == ResponseModel.seed:
        clicks, buys = respond_seed_nb(rng, click_cdf, buy_cdf, outcome, order)
    elif model == ResponseModel.truth:
        clicks, buys, shown_mu = respond_truth_nb(rng, truth, outcome_reward, state, slate, outcome)
    else:  # given
        clicks, buys = count_outcomes_nb(outcome)
    reward = update_cells_nb(
        rng, state, value, cells, outcome_reward, slate, outcome, previous, step, drawn
    )
    n = slate.shape[0]
    state_shown[state] += n
    if search == TopNSearch.tree:
        repair_index_nb(value, index, state, depth, slate)
        refresh_cache_nb(value, state, slate, previous, cache_floor, cache_size, cache_items)
    knows_regret = model == ResponseModel.truth
    regret = best_mu[state] - shown_mu if knows_regret else 0.0
    record_visit_nb(metrics, block, n, reward, clicks, buys, explored, knows_regret, regret)


@jit()
def play_slate_nb(
    rng: np.random.Generator,
    state: int,
    explored: int,
    learner: Learner,
    policy: PolicyParams,
    response: ResponseArrays,
    ws: Workspace,
    metrics: np.ndarray,
) -> None:
    """:func:`respond_update_record_nb` with bundled arguments (one visit: the online visit).

    ``metrics`` (METRICS_DTYPE, shape (1,)) receives the visit's sums. An online visit is
    answered by the response's first phase.
    """
    respond_update_record_nb(
        rng, state, explored, response.model, response.click_cdf, response.buy_cdf,
        response.truth[0], response.best_mu[0], response.outcome_reward, learner.value,
        learner.tree, learner.depth, policy.search, policy.step, learner.cells,
        learner.cache_floor, learner.cache_size, learner.cache_items,
        learner.state_shown,
        ws.slate, ws.outcome, ws.order, ws.previous, ws.drawn, metrics, 0,
    )  # fmt: skip


@jit(inline=True)
def count_outcomes_nb(outcome: np.ndarray) -> tuple[int, int]:
    """Clicks and purchases of given outcomes (a bought product counts as bought only)."""
    clicks = 0
    buys = 0
    for i in range(outcome.shape[0]):
        clicks += outcome[i] == Outcome.clicked
        buys += outcome[i] == Outcome.bought
    return clicks, buys
