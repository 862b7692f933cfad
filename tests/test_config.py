"""Config: TOML and the original JSON give one validated RunConfig; bad values are one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rlreco.config import UCI_NON_PRODUCTS, RunConfig, config_from_dict, load_config
from rlreco.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_shipped_toml_equals_defaults_and_original_json() -> None:
    toml = load_config(REPO / "configs" / "online_retail.toml")
    original = load_config(REPO / "configs" / "custprof.json")
    # the original recommends every stock code; the shipped TOML drops non-merchandise codes
    assert original.data.exclude_products == ()
    assert toml.data.exclude_products == UCI_NON_PRODUCTS
    assert toml == original.replace(**{"data.exclude_products": list(UCI_NON_PRODUCTS)})
    assert toml.data.path.resolve() == (REPO / "data" / "online_retail.parquet").resolve()
    defaults = RunConfig()
    assert toml.replace(**{"data.path": str(defaults.data.path)}) == defaults


def test_original_json_keys_map_to_fields(tmp_path: Path) -> None:
    cfg = tmp_path / "custprof.json"
    cfg.write_text(
        '/* comment */ {"inputData": "x.csv", "prod_qnty": "Qty", "nclust": 3, "monthPer": 10,'
        ' "epsilon": 0.25, "nProducts": 5, "buyReward": 7, "clickReward": 2, "ignore": -1}'
    )
    c = load_config(cfg)
    assert c.data.path == tmp_path / "x.csv"
    assert c.data.columns.quantity == "Qty"
    assert (c.segmentation.n_clusters, c.states.split_day) == (3, 10)
    assert (c.policy.epsilon, c.policy.slate_size) == (0.25, 5)
    assert (c.rewards.buy, c.rewards.click, c.rewards.ignore) == (7.0, 2.0, -1.0)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"policy": {"epsilon": 1.5}}, "key 'policy.epsilon' = 1.5: expected a number in [0, 1]"),
        ({"policy": {"epsilon": -0.1}}, "policy.epsilon"),
        ({"policy": {"slate_size": 0}}, "key 'policy.slate_size' = 0: expected an integer >= 1"),
        ({"segmentation": {"n_clusters": 0}}, "segmentation.n_clusters"),
        ({"policy": {"epsilon": "high"}}, "expected a number"),
        ({"policy": {"slate_size": 2.5}}, "expected an integer"),
        ({"bogus": {}}, "unknown key 'bogus'"),
        (
            {"policy": {"eps": 0.1}},
            "unknown key 'policy.eps': allowed keys are epsilon, name, param, slate_size, "
            "step_size",
        ),
        ({"simulation": {"state_sampling": "random"}}, "'uniform' or 'empirical'"),
        ({"response": {"click_probs": [0.5, 0.4]}}, "summing to 1"),
        ({"segmentation": {"scores": {"Q2": [0], "Q3": [0]}}}, "score 0 is mapped to both"),
    ],
)
def test_bad_values_are_one_line_naming_key(raw: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, source="run.toml")
    msg = str(info.value)
    assert needle in msg
    assert msg.startswith("run.toml: ")
    assert "\n" not in msg


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[policy\nepsilon = ")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)
    badjson = tmp_path / "bad.json"
    badjson.write_text('{"epsilon": 0.1, "colour": 1}')
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        load_config(badjson)


def test_segment_table_covers_every_score() -> None:
    table = RunConfig().segment_of_score()
    assert table == {0: "Q2", 1: "Q2", 2: "Q3", 3: "Q1", 4: "Q4", 5: "Q4", 6: "Q4",
                     7: "Q1", 8: "Q1", 9: "Q1"}  # fmt: skip


def test_to_dict_round_trips() -> None:
    cfg = RunConfig().replace(**{"policy.epsilon": 0.3})
    assert config_from_dict(cfg.to_dict()) == cfg


def test_config_and_its_sections_load_no_layer() -> None:
    # rlreco.config and rlreco.config_sections sit below every layer (cli, app, engine, io)
    probe = (
        "import sys, rlreco.config, rlreco.config_sections; "
        "print(sorted(m for m in sys.modules if m.split('.')[:2] in "
        "(['rlreco', 'engine'], ['rlreco', 'io'], ['rlreco', 'app'], ['rlreco', 'cli'])))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert done.stdout.strip() == "[]"
