"""Simulator: determinism, chunking and resume, closed-form checks, response models, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from naive import synthetic_world

from rlreco.app.truth import load_truth_tables
from rlreco.config import SEED_BUY_PROBS, SEED_CLICK_PROBS
from rlreco.engine.kernels.topn import new_index
from rlreco.engine.response import (
    build_response,
    expected_reward,
    mean_per_slot,
    popularity_probabilities,
)
from rlreco.engine.simulation import (
    METRIC_COLUMNS,
    METRIC_SUMS,
    SimulationParams,
    SimulationSummary,
    Simulator,
)
from rlreco.engine.state_space import StateSpace
from rlreco.engine.tables import Tables
from rlreco.errors import DataError, SimulationError, SnapshotError


def params(**changes: object) -> SimulationParams:
    base: dict[str, object] = {"slate_size": 5, "metrics_block": 700}
    base.update(changes)
    return SimulationParams(**base)  # type: ignore[arg-type]


def metrics_equal(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    return a.columns.tolist() == b.columns.tolist() and all(
        np.array_equal(a[c].to_numpy(), b[c].to_numpy(), equal_nan=True) for c in a.columns
    )


@pytest.mark.parametrize("response", ["seed", "popularity"])
def test_chunks_and_resume_are_bit_identical(response: str, tmp_path: Path) -> None:
    space, initial = synthetic_world()
    p = params(response=response, state_sampling="empirical")
    whole = Simulator(space, initial.copy(), p, seed=5)
    whole.run(5_000)
    chunked = Simulator(space, initial.copy(), p, seed=5)
    chunked.run(5_000, chunk=777)
    assert chunked.tables.equals(whole.tables)
    assert metrics_equal(chunked.metrics_frame(), whole.metrics_frame())
    assert chunked.rng_state == whole.rng_state

    # interrupted by should_stop after two chunks, saved through JSON and Parquet, resumed
    calls = []
    first = Simulator(space, initial.copy(), p, seed=5)
    summary = first.run(5_000, chunk=1_000, should_stop=lambda: calls.append(1) or len(calls) >= 2)
    assert summary.stopped and summary.episodes == 2_000 == first.episodes_total
    state = json.loads(json.dumps(first.rng_state))
    first.metrics_frame().to_parquet(tmp_path / "metrics.parquet")
    resumed = Simulator(
        space,
        first.tables.copy(),
        p,
        seed=999,  # ignored: the saved streams continue
        rng_state=state,
        episodes_done=2_000,
        metrics=pd.read_parquet(tmp_path / "metrics.parquet"),
        history_count=initial.count.copy(),
    )
    resumed.run(3_000, chunk=1_234)
    assert resumed.tables.equals(whole.tables)
    assert metrics_equal(resumed.metrics_frame(), whole.metrics_frame())
    other_seed = Simulator(space, initial.copy(), p, seed=6)
    other_seed.run(5_000)
    assert not other_seed.tables.equals(whole.tables)


POLICY_NAMES = ["eps-greedy", "decaying", "softmax", "ucb1", "thompson"]


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_every_policy_is_bit_identical_chunked_and_resumed(policy: str, tmp_path: Path) -> None:
    space, initial = synthetic_world()
    p = params(response="popularity", policy=policy, metrics_block=300)
    whole = Simulator(space, initial.copy(), p, seed=5)
    whole.run(3_000)
    chunked = Simulator(space, initial.copy(), p, seed=5)
    for n in (1, 998, 1_001, 1_000):  # and across run() calls
        chunked.run(n, chunk=333)
    assert chunked.tables.equals(whole.tables)
    assert metrics_equal(chunked.metrics_frame(), whole.metrics_frame())
    assert chunked.rng_state == whole.rng_state
    state = whole.policy_state
    if policy == "decaying":
        assert set(state) == {"state_visits"} and int(state["state_visits"].sum()) == 3_000
    else:
        assert state == {}

    calls: list[int] = []
    first = Simulator(space, initial.copy(), p, seed=5)
    first.run(3_000, chunk=700, should_stop=lambda: calls.append(1) or len(calls) >= 2)
    assert first.episodes_total == 1_400
    np.savez(tmp_path / "policy.npz", **first.policy_state)
    first.metrics_frame().to_parquet(tmp_path / "metrics.parquet")
    resumed = Simulator(
        space,
        first.tables.copy(),
        p,
        rng_state=json.loads(json.dumps(first.rng_state)),
        episodes_done=1_400,
        metrics=pd.read_parquet(tmp_path / "metrics.parquet"),
        history_count=initial.count.copy(),
        policy_state=dict(np.load(tmp_path / "policy.npz")),
    )
    resumed.run(1_600, chunk=555)
    assert resumed.tables.equals(whole.tables)
    assert metrics_equal(resumed.metrics_frame(), whole.metrics_frame())
    assert resumed.rng_state == whole.rng_state


def test_decaying_resume_needs_its_visit_counts() -> None:
    space, tables = synthetic_world()
    p = params(policy="decaying", policy_param=4.0)
    sim = Simulator(space, tables.copy(), p, seed=1)
    sim.run(500)
    common = {
        "episodes_done": 500,
        "metrics": sim.metrics_frame(),
        "history_count": tables.count,
        "rng_state": sim.rng_state,
    }
    with pytest.raises(SnapshotError, match="state_visits missing for the 500 visits"):
        Simulator(space, sim.tables.copy(), p, **common)
    wrong = {"state_visits": sim.policy_state["state_visits"] * 2}
    with pytest.raises(SnapshotError, match="sums to 1000, not the 500 visits"):
        Simulator(space, sim.tables.copy(), p, policy_state=wrong, **common)
    with pytest.raises(SnapshotError, match="not kept by the eps-greedy policy"):
        Simulator(space, tables, params(), policy_state={"state_visits": np.zeros(3)})


def test_decaying_with_c_zero_is_greedy_and_default_params_apply() -> None:
    space, initial = synthetic_world(known=(12, 25, 7))
    runs = []
    for p in (params(policy="decaying", policy_param=0.0), params(epsilon=0.0)):
        sim = Simulator(space, initial.copy(), p, seed=3)
        sim.run(2_000)
        runs.append(sim)
    # epsilon min(1, 0 / v) = 0: the same slates and draws as greedy epsilon-greedy
    assert runs[0].tables.equals(runs[1].tables)
    assert metrics_equal(runs[0].metrics_frame(), runs[1].metrics_frame())
    assert params(policy="softmax").param == 0.5 and params(policy="ucb1").param == 2.0
    assert params(policy="thompson", policy_param=1.5).param == 1.5
    assert params(epsilon=0.3).param == 0.3


def test_scan_search_gives_the_same_run() -> None:
    space, initial = synthetic_world()
    runs = []
    for search in ("tree", "scan"):
        sim = Simulator(space, initial.copy(), params(search=search, epsilon=0.3), seed=2)
        sim.run(3_000)
        runs.append(sim)
    assert runs[0].tables.equals(runs[1].tables)
    assert metrics_equal(runs[0].metrics_frame(), runs[1].metrics_frame())


@pytest.mark.parametrize("policy", ["eps-greedy", "ucb1"])
def test_a_kept_index_and_shown_counts_give_the_same_runs(policy: str) -> None:
    space, initial = synthetic_world()
    p = params(policy=policy, response="popularity")
    warm = Simulator(space, initial.copy(), p, seed=8)
    warm.run(1_500)  # starting tables with recommendations already counted
    start = warm.tables
    runs = []
    for given in (False, True):
        tables = start.copy()
        index = new_index(tables.padded)
        kept = {"index": index, "shown_per_state": tables.reco_count.sum(axis=1)} if given else {}
        sim = Simulator(space, tables, p, seed=3, **kept)
        sim.run(2_000)
        if given and policy == "eps-greedy":  # updated in place with the tables (the
            # other policies neither read nor keep it)
            assert index.tobytes() == new_index(tables.padded).tobytes()
        tables.value[:, 0] = 9.5  # edited between calls: the next call derives all afresh
        sim.run(1_000)
        runs.append(sim)
    assert runs[0].tables.equals(runs[1].tables)
    assert metrics_equal(runs[0].metrics_frame(), runs[1].metrics_frame())
    sums = runs[1].metric_sums()
    assert tuple(sums) == METRIC_SUMS
    frame = runs[1].metrics_frame()
    assert all(sums[name].tobytes() == frame[name].to_numpy().tobytes() for name in METRIC_SUMS)


@pytest.mark.parametrize(
    ("name", "wrong"),
    [
        ("index", np.zeros((3, 4))),
        ("index", np.zeros((40, 9), dtype=np.float32)),
        ("shown_per_state", np.zeros(3, dtype=np.int64)),
        ("shown_per_state", np.zeros(40)),
    ],
)
def test_a_kept_array_of_another_shape_or_type_is_refused(name: str, wrong: np.ndarray) -> None:
    space, tables = synthetic_world()
    if name == "index":  # the right number of states, whatever the width
        wrong = np.zeros((space.n_states, *wrong.shape[1:]), dtype=wrong.dtype)
    with pytest.raises(SimulationError, match=f"^{name}: shape .* expected a C-contiguous"):
        Simulator(space, tables, params(), **{name: wrong})


def test_metrics_frame_and_summary() -> None:
    space, tables = synthetic_world()
    sim = Simulator(space, tables, params(metrics_block=1_000), seed=1)
    summary = sim.run(2_500, chunk=1_000)
    frame = sim.metrics_frame()
    assert tuple(frame.columns) == METRIC_COLUMNS
    assert frame["visits"].tolist() == [1_000, 1_000, 500]
    assert frame["first_visit"].tolist() == [0, 1_000, 2_000]
    assert frame["slots"].tolist() == [5_000, 5_000, 2_500]
    assert frame["mean_regret"].isna().all()  # the seed model knows no truth
    assert summary.episodes == summary.episodes_total == 2_500
    assert summary.mean_reward == pytest.approx(frame["reward_sum"].sum() / 2_500)
    assert summary.click_rate == pytest.approx(frame["clicks"].sum() / 12_500)
    assert summary.to_dict()["mean_regret"] is None
    assert summary.episodes_per_second > 0
    # a second call reports its own visits only
    again = sim.run(500)
    assert again.episodes == 500 and again.episodes_total == 3_000


def test_summaries_of_consecutive_calls_combine() -> None:
    space, tables = synthetic_world()
    sim = Simulator(space, tables, params(response="popularity"), seed=4)
    parts = [sim.run(n) for n in (1_000, 2_500, 500)]
    whole = SimulationSummary.combine(parts)
    frame = sim.metrics_frame()
    assert whole.episodes == whole.episodes_total == 4_000
    assert whole.mean_reward == pytest.approx(frame["reward_sum"].sum() / 4_000)
    assert whole.click_rate == pytest.approx(frame["clicks"].sum() / frame["slots"].sum())
    assert whole.explored_share == pytest.approx(frame["explored"].sum() / frame["slots"].sum())
    assert whole.mean_regret == pytest.approx(frame["regret_sum"].sum() / 4_000)
    assert whole.seconds == pytest.approx(sum(p.seconds for p in parts))
    with pytest.raises(SimulationError, match="no simulation summaries"):
        SimulationSummary.combine([])


def test_epsilon_one_slates_are_uniform_over_the_catalogue() -> None:
    space, tables = synthetic_world(known=(0, 25, 10))
    before = tables.reco_count.copy()
    sim = Simulator(space, tables, params(epsilon=1.0, slate_size=5), seed=3)
    sim.run(60_000)
    shown = tables.reco_count - before
    per_state = shown.sum(axis=1) // 5
    statistic, dof = 0.0, 0
    for state in range(space.n_states):
        catalogue = space.catalogue(int(space.state_segment[state]))
        outside = np.setdiff1d(np.arange(space.n_products), catalogue)
        assert shown[state, outside].sum() == 0
        expected = per_state[state] * 5 / catalogue.size
        statistic += float(((shown[state, catalogue] - expected) ** 2 / expected).sum())
        dof += catalogue.size - 1
    # chi-square with `dof` degrees of freedom: within 5 standard deviations of its mean
    assert abs(statistic - dof) < 5 * math.sqrt(2 * dof)
    assert sim.metrics_frame()["explored"].sum() == 60_000 * 5


def test_epsilon_zero_shows_the_top_n_by_value() -> None:
    space, tables = synthetic_world(known=(12, 25, 7))
    sim = Simulator(space, tables, params(epsilon=0.0, slate_size=5), seed=4)
    for _ in range(300):
        value_before = tables.value.copy()
        shown_before = tables.reco_count.copy()
        sim.run(1)
        state = int(np.flatnonzero((tables.reco_count != shown_before).any(axis=1))[0])
        row = value_before[state]
        known = [p for p in range(row.size) if np.isfinite(row[p])]
        top = sorted(known, key=lambda p: (-row[p], p))[:5]
        shown = np.flatnonzero(tables.reco_count[state] != shown_before[state]).tolist()
        assert sorted(top) == shown if len(known) >= 5 else set(top) <= set(shown)
    assert sim.metrics_frame()["explored"].sum() == 0


def test_seed_model_mean_reward_matches_closed_form() -> None:
    space, tables = synthetic_world()
    n = 10
    sim = Simulator(space, tables, params(slate_size=n, metrics_block=10_000), seed=8)
    sim.run(400_000)
    frame = sim.metrics_frame()
    # a slot is in the click set with probability pc = E[min(C, n)] / n, in the (independently
    # drawn) buy set with pb; bought beats clicked
    pc, pb = mean_per_slot(SEED_CLICK_PROBS, n), mean_per_slot(SEED_BUY_PROBS, n)
    assert (pc, pb) == (pytest.approx(0.074326), pytest.approx(0.054326))
    per_slot = pb * 5.0 + (1 - pb) * pc * 1.0 + (1 - pb) * (1 - pc) * -2.0
    closed_form = n * per_slot
    assert closed_form == pytest.approx(-14.0885, abs=1e-4)
    block_means = frame["mean_reward"].to_numpy()
    standard_error = block_means.std(ddof=1) / math.sqrt(block_means.size)
    assert abs(frame["reward_sum"].sum() / 400_000 - closed_form) < 5 * standard_error
    assert standard_error < 0.02
    assert frame["clicks"].sum() / frame["slots"].sum() == pytest.approx(pc, abs=0.002)
    assert frame["buys"].sum() / frame["slots"].sum() == pytest.approx(pb, abs=0.002)


def test_cold_states_are_padded_with_catalogue_products() -> None:
    space, tables = synthetic_world(known=(0,))
    sim = Simulator(space, tables, params(epsilon=0.0, slate_size=5), seed=1)
    sim.run(20)
    assert sim.metrics_frame()["explored"].sum() == 0  # padding is not exploration
    assert (tables.reco_count.sum(axis=1) > 0).any()
    for state in np.flatnonzero(tables.reco_count.sum(axis=1)):
        shown = np.flatnonzero(tables.reco_count[state])
        assert np.isin(shown, space.catalogue(int(space.state_segment[state]))).all()
        assert np.isfinite(tables.value[state, shown]).all()  # shown products became known


def test_popularity_probabilities_follow_the_formula() -> None:
    space, tables = synthetic_world(known=(0, 3, 12, 25))
    count = tables.count.copy()
    target_click, target_buy = 0.0743, 0.0543
    p_click, p_buy = popularity_probabilities(space, count, target_click, target_buy)
    q = np.maximum(count, 0).astype(float)
    for state in range(space.n_states):
        segment = int(space.state_segment[state])
        catalogue = space.catalogue(segment)
        outside = np.setdiff1d(np.arange(space.n_products), catalogue)
        assert not p_click[state, outside].any() and not p_buy[state, outside].any()
        assert p_click[state, catalogue].mean() == pytest.approx(target_click, rel=1e-9)
        assert p_buy[state, catalogue].mean() == pytest.approx(target_buy, rel=1e-9)
        q_seg = q[space.state_segment == segment][:, catalogue].sum(axis=0)
        q_state = q[state, catalogue]
        weight = 0.9 * q_seg / q_seg.sum() + 0.1 / catalogue.size
        if q_state.sum() > 0:
            weight = (
                0.45 * q_state / q_state.sum() + 0.45 * q_seg / q_seg.sum() + 0.1 / catalogue.size
            )
        # p = 1 - exp(-k w) with one k per state and probability
        for p in (p_click, p_buy):
            k = -np.log1p(-p[state, catalogue]) / weight
            assert np.allclose(k, k[0], rtol=1e-9)


def test_uniform_slates_get_the_seed_models_clicks_and_buys() -> None:
    space, tables = synthetic_world()
    uniform = params(epsilon=1.0, slate_size=10, response="popularity")
    sim = Simulator(space, tables, uniform, seed=2)
    sim.run(100_000)
    frame = sim.metrics_frame()
    assert frame["clicks"].sum() / 100_000 == pytest.approx(0.743, abs=0.01)
    assert frame["buys"].sum() / 100_000 == pytest.approx(0.543, abs=0.01)
    # uniform slates: expected regret = best slate - n * catalogue mean of mu, averaged over
    # (uniformly drawn) states
    mu = sim.response.mu[0]
    expected = np.mean(
        [
            sim.response.best_mu[0, s]
            - 10 * mu[s, space.catalogue(int(space.state_segment[s]))].mean()
            for s in range(space.n_states)
        ]
    )
    regret = frame["regret_sum"].sum() / frame["regret_visits"].sum()
    assert regret == pytest.approx(expected, abs=0.05)


def test_greedy_regret_is_nonnegative_and_below_random() -> None:
    space, tables = synthetic_world(known=(25,))
    runs = {}
    for epsilon in (0.0, 1.0):
        sim = Simulator(
            space, tables.copy(), params(epsilon=epsilon, response="popularity"), seed=7
        )
        sim.run(20_000)
        runs[epsilon] = sim.metrics_frame()
        assert (runs[epsilon]["regret_sum"] >= -1e-9).all()
    last = slice(-5, None)
    assert runs[0.0]["mean_regret"].iloc[last].mean() < runs[1.0]["mean_regret"].iloc[last].mean()


def truth_frame(space: StateSpace, p_click: np.ndarray, p_buy: np.ndarray) -> pd.DataFrame:
    rows = []
    for state, sid in enumerate(space.state_ids):
        for product in space.catalogue(int(space.state_segment[state])):
            rows.append(
                (sid, space.product_codes[product], p_click[state, product], p_buy[state, product])
            )
    return pd.DataFrame(rows, columns=["state_id", "product_id", "p_click", "p_buy"])


def test_truth_table_reproduces_the_popularity_run(tmp_path: Path) -> None:
    space, initial = synthetic_world()
    p_click, p_buy = popularity_probabilities(
        space,
        initial.count,
        mean_per_slot(SEED_CLICK_PROBS, 5),
        mean_per_slot(SEED_BUY_PROBS, 5),
    )
    path = tmp_path / "truth.parquet"
    truth_frame(space, p_click, p_buy).sample(frac=1.0, random_state=0).to_parquet(path)
    runs = []
    for response in ("popularity", str(path)):
        sim = Simulator(
            space,
            initial.copy(),
            params(response=response),
            seed=3,
            truth_tables=load_truth_tables(response),
        )
        sim.run(4_000)
        runs.append(sim)
    assert runs[0].tables.equals(runs[1].tables)
    assert metrics_equal(runs[0].metrics_frame(), runs[1].metrics_frame())
    mu = expected_reward(p_click, p_buy, (-2.0, 1.0, 5.0))
    assert np.array_equal(runs[1].response.mu[0], mu)


def break_table(frame: pd.DataFrame, how: str, space: StateSpace) -> pd.DataFrame:
    frame = frame.copy()
    if how == "unknown state":
        frame.loc[3, "state_id"] = "Q9_December_0_Monday"
    elif how == "unknown product":
        frame.loc[3, "product_id"] = "NOPE"
    elif how == "outside catalogue":
        outside = np.setdiff1d(np.arange(space.n_products), space.catalogue(0))[0]
        frame.loc[3, "product_id"] = space.product_codes[outside]
    elif how == "duplicate":
        frame = pd.concat([frame, frame.iloc[[3]]], ignore_index=True)
    elif how == "missing":
        frame = frame.drop(index=3).reset_index(drop=True)
    elif how == "probability":
        frame.loc[3, "p_buy"] = 1.5
    elif how == "nan":
        frame.loc[3, "p_click"] = np.nan
    elif how == "column":
        frame = frame.drop(columns="p_buy")
    return frame


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("unknown state", "row 3: state_id 'Q9_December_0_Monday' is not in this run"),
        ("unknown product", "row 3: product_id 'NOPE' is not in this run"),
        ("outside catalogue", "row 3: product"),
        ("duplicate", "appears more than once"),
        ("missing", "has no row for catalogue product"),
        ("probability", "row 3 ('Q1_December_0_Monday', "),
        ("nan", "row 3: column 'p_click' is missing a value"),
        ("column", "missing column(s) p_buy"),
    ],
)
def test_bad_truth_tables_get_one_line_errors(how: str, message: str, tmp_path: Path) -> None:
    space, tables = synthetic_world()
    good = truth_frame(space, np.full(tables.shape, 0.1), np.full(tables.shape, 0.05))
    path = tmp_path / "truth.parquet"
    break_table(good, how, space).to_parquet(path)
    with pytest.raises(DataError) as info:
        # the application reads the file, the engine checks it against the state space
        Simulator(
            space, tables, params(response=str(path)), truth_tables=load_truth_tables(str(path))
        )
    text = str(info.value)
    assert "\n" not in text and str(path) in text and message in text
    if how == "outside catalogue":
        assert "is not in the catalogue of segment Q1" in text


def test_unreadable_truth_tables(tmp_path: Path) -> None:
    space, tables = synthetic_world()
    # the engine reads no file: a truth table it was not given is a one-line error
    with pytest.raises(SimulationError, match="expected seed, popularity, the path"):
        Simulator(space, tables, params(response=str(tmp_path / "absent.parquet")))
    with pytest.raises(DataError, match="truth table not found"):
        load_truth_tables(str(tmp_path / "absent.parquet"))
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(DataError, match=r"junk\.parquet: not a readable Parquet file"):
        load_truth_tables(str(junk))
    empty = tmp_path / "empty.parquet"
    pd.DataFrame({c: pd.Series([], dtype="str") for c in ("state_id", "product_id")}).assign(
        p_click=pd.Series([], dtype=float), p_buy=pd.Series([], dtype=float)
    ).to_parquet(empty)
    with pytest.raises(DataError, match="has no rows"):
        load_truth_tables(str(empty))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"slate_size": 26}, "slate size 26 exceeds the catalogue of segment Q1 (25 products)"),
        ({"slate_size": 0}, "slate size = 0"),
        ({"epsilon": 1.5}, "epsilon = 1.5"),
        ({"click_probs": (0.5, 0.4)}, "click_probs = [0.5, 0.4]: sums to 0.9"),
        ({"buy_probs": (1.2, -0.2)}, "buy_probs = [1.2, -0.2]: every entry must be in [0, 1]"),
        ({"state_sampling": "weighted"}, "state sampling 'weighted'"),
        ({"response": "clicky"}, "response 'clicky': expected seed, popularity"),
        ({"metrics_block": 0}, "metrics block = 0"),
        ({"policy": "greedy"}, "policy 'greedy': expected one of eps-greedy, decaying"),
        ({"policy": "softmax", "policy_param": 0.0}, "softmax tau = 0.0: expected a finite"),
        ({"policy": "ucb1", "policy_param": -1.0}, "ucb1 c = -1.0: expected a finite number >= 0"),
        ({"policy": "thompson", "policy_param": float("inf")}, "thompson sigma = inf"),
        ({"policy_param": 0.3}, "eps-greedy takes epsilon"),
    ],
)
def test_bad_parameters_get_one_line_errors(changes: dict[str, object], message: str) -> None:
    space, tables = synthetic_world()
    with pytest.raises(SimulationError) as info:
        Simulator(space, tables, params(**changes))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_inconsistent_resume_state_is_rejected() -> None:
    space, tables = synthetic_world()
    sim = Simulator(space, tables.copy(), params(), seed=1)
    sim.run(1_000)
    frame = sim.metrics_frame()
    with pytest.raises(SnapshotError, match="rng_state"):
        Simulator(space, tables, params(), rng_state={"bit_generator": "MT19937"})
    with pytest.raises(SnapshotError, match="missing for the 1000 visits"):
        Simulator(space, tables, params(), episodes_done=1_000, history_count=tables.count)
    with pytest.raises(SnapshotError, match="do not match the 1500 visits"):
        Simulator(
            space, tables, params(), episodes_done=1_500, metrics=frame, history_count=tables.count
        )
    with pytest.raises(SnapshotError, match="blocks of 500"):
        Simulator(
            space,
            tables,
            params(metrics_block=500),
            episodes_done=1_000,
            metrics=frame,
            history_count=tables.count,
        )


def test_shared_response_is_reused() -> None:
    space, tables = synthetic_world()
    response = build_response(
        "popularity",
        space,
        rewards=(-2.0, 1.0, 5.0),
        slate_size=5,
        click_probs=SEED_CLICK_PROBS,
        buy_probs=SEED_BUY_PROBS,
        history_count=tables.count,
    )
    copy = Tables(tables.value.copy(), tables.cells.copy())
    sim = Simulator(space, copy, params(), response=response)
    assert sim.response is response
    assert sim.run(100).mean_regret is not None
