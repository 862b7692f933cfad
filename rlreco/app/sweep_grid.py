"""The grid of a sweep: settings (policy, parameter, slate size, response) and their checks.

A *setting* is (response model, slate size, policy, policy parameter): epsilon for
``eps-greedy``; ``c`` for ``decaying`` (epsilon_t = min(1, c / visits to the state)); ``tau``
for ``softmax``; ``c`` for ``ucb1``; ``sigma`` for ``thompson`` (the reward noise scale of the
Gaussian posterior). A setting's random stream is keyed by a hash of its *values*
(:attr:`Setting.stream_id`), never by its place in the grid.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlreco.app.truth import is_holdout_response
from rlreco.config import RunConfig
from rlreco.engine.simulation import DEFAULT_POLICY_PARAM, POLICY_PARAMS
from rlreco.errors import ConfigError
from rlreco.io.run_dir import file_sha256

#: parameter values of the policies other than eps-greedy when the spec gives none
DEFAULT_POLICY_PARAMS: dict[str, tuple[float, ...]] = {
    policy: (value,) for policy, value in DEFAULT_POLICY_PARAM.items()
}
#: response models known by name; anything else must be a truth-table Parquet file
RESPONSE_NAMES = ("seed", "popularity")


@dataclass(frozen=True)
class Setting:
    """One point of the grid.

    Attributes
    ----------
    policy : str
        A key of :data:`POLICY_PARAMS`.
    param : float
        The policy's parameter (epsilon for ``eps-greedy``).
    slate_size : int
    response : str
        ``seed``, ``popularity`` or the absolute path of a truth-table Parquet file.
    response_id : str
        ``response`` for named models, ``sha256:<hex>`` of the file for truth tables.
    """

    policy: str
    param: float
    slate_size: int
    response: str
    response_id: str

    @property
    def param_name(self) -> str:
        """Name of the policy's parameter."""
        return POLICY_PARAMS[self.policy]

    @property
    def label(self) -> str:
        """Readable one-line description."""
        return (
            f"{self.policy} {self.param_name}={self.param:g} n={self.slate_size} "
            f"{Path(self.response).name}"
        )

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the setting's values; independent of grid order and paths."""
        identity = {
            "policy": self.policy,
            "param": float(self.param).hex(),
            "slate_size": int(self.slate_size),
            "response": self.response_id,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    @property
    def stream_id(self) -> int:
        """64-bit stream key of the setting (first 16 hex digits of :attr:`digest`)."""
        return int(self.digest[:16], 16)

    def columns(self) -> dict[str, Any]:
        """Values of :data:`SETTING_COLUMNS`."""
        return {
            "policy": self.policy,
            "param_name": self.param_name,
            "param": float(self.param),
            "slate_size": int(self.slate_size),
            "response": self.response,
        }

    def cell_key(self, replicate: int) -> str:
        """File-name-safe key of one replicate, readable and unique."""
        response = Path(self.response).stem if self.response_id != self.response else self.response
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in response)
        return (
            f"{self.policy}-{self.param_name}{self.param:.6g}-n{self.slate_size}-{safe}"
            f"-{self.digest[:8]}-r{replicate:03d}"
        )


@dataclass(frozen=True)
class SweepSpec:
    """What to sweep.

    Attributes
    ----------
    epsilons : sequence of float
        Epsilon values of ``eps-greedy`` (each in [0, 1]); required when it is a policy.
    replicates : int
        Independent replicates per setting (>= 1; >= 2 for confidence intervals).
    episodes : int
        Visits per cell (>= 1).
    policies : sequence of str
        Keys of :data:`POLICY_PARAMS`.
    slate_sizes : sequence of int, optional
        Slate sizes; default the run's ``policy.slate_size``.
    responses : sequence of str, optional
        ``seed``, ``popularity`` or truth-table Parquet paths; default the run's
        ``response.model``.
    params : mapping of str to sequence of float
        Parameter values of the other policies; default :data:`DEFAULT_POLICY_PARAMS`.
    seed : int, optional
        Sweep seed (>= 0); default the run's ``simulation.seed``.
    blocks : int
        Metric blocks per cell (>= 1): the resolution of the learning curves.
    """

    epsilons: Sequence[float]
    replicates: int
    episodes: int
    policies: Sequence[str] = ("eps-greedy",)
    slate_sizes: Sequence[int] | None = None
    responses: Sequence[str] | None = None
    params: Mapping[str, Sequence[float]] = field(default_factory=dict)
    seed: int | None = None
    blocks: int = 100

    def validate(self) -> None:
        """Check the grid; raise a one-line :class:`ConfigError` naming the bad value."""
        if not self.policies:
            raise ConfigError("policies: empty list; allowed: " + ", ".join(POLICY_PARAMS))
        for policy in self.policies:
            if policy not in POLICY_PARAMS:
                raise ConfigError(
                    f"policies: unknown policy {policy!r}; allowed: " + ", ".join(POLICY_PARAMS)
                )
        _unique("policies", list(self.policies))
        if "eps-greedy" in self.policies:
            _check_values("epsilons", self.epsilons, lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
        for policy, values in self.params.items():
            if policy not in POLICY_PARAMS or policy == "eps-greedy":
                raise ConfigError(
                    f"params: unknown policy {policy!r}; allowed: "
                    + ", ".join(p for p in POLICY_PARAMS if p != "eps-greedy")
                )
            name = f"{policy}.{POLICY_PARAMS[policy]}"
            if policy in ("softmax", "thompson"):
                _check_values(name, values, lambda v: 0.0 < v < math.inf, "finite and > 0")
            else:
                _check_values(name, values, lambda v: 0.0 <= v < math.inf, "finite and >= 0")
        check_int("replicates", self.replicates, 1)
        check_int("episodes", self.episodes, 1)
        check_int("blocks", self.blocks, 1)
        if self.seed is not None:
            check_int("seed", self.seed, 0)
        if self.slate_sizes is not None:
            if not self.slate_sizes:
                raise ConfigError("slate sizes: empty list; give at least one integer >= 1")
            for size in self.slate_sizes:
                check_int("slate sizes", size, 1)
            _unique("slate sizes", list(self.slate_sizes))
        if self.responses is not None:
            if not self.responses:
                raise ConfigError("responses: empty list; give seed, popularity or a file")
            _unique("responses", list(self.responses))
            for response in self.responses:
                known = response in RESPONSE_NAMES or is_holdout_response(response)
                if not known and not Path(response).is_file():
                    raise ConfigError(
                        f"responses: {response!r} is neither seed, popularity, holdout[:NAME] "
                        "nor an existing truth-table file"
                    )

    def policy_values(self, policy: str) -> tuple[float, ...]:
        """Parameter values of one policy."""
        if policy == "eps-greedy":
            return tuple(float(e) for e in self.epsilons)
        return tuple(float(v) for v in self.params.get(policy, DEFAULT_POLICY_PARAMS[policy]))

    def settings(
        self, config: RunConfig, resolve: Callable[[str], str] = lambda r: r
    ) -> list[Setting]:
        """Settings in grid order (response, slate size, policy, parameter).

        ``resolve`` maps a response spec to what the engine reads (``holdout`` to the run's
        held-out truth file, see :func:`rlreco.app.truth.resolve_response`).
        """
        responses = self.responses if self.responses is not None else (config.response.model,)
        slates = self.slate_sizes if self.slate_sizes is not None else (config.policy.slate_size,)
        out = []
        for spec in responses:
            response = resolve(str(spec))
            if response in RESPONSE_NAMES:
                name, ident = response, response
            else:
                path = Path(response).resolve()
                if not path.is_file():
                    raise ConfigError(f"responses: truth table {path} not found")
                name, ident = str(path), f"sha256:{file_sha256(path)}"
            for slate in slates:
                for policy in self.policies:
                    for value in self.policy_values(policy):
                        out.append(Setting(policy, float(value), int(slate), name, ident))
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible description."""
        return {
            "epsilons": [float(e) for e in self.epsilons],
            "replicates": int(self.replicates),
            "episodes": int(self.episodes),
            "policies": list(self.policies),
            "slate_sizes": None if self.slate_sizes is None else [int(s) for s in self.slate_sizes],
            "responses": None if self.responses is None else [str(r) for r in self.responses],
            "params": {k: [float(v) for v in vs] for k, vs in self.params.items()},
            "seed": self.seed,
            "blocks": int(self.blocks),
        }


def check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name}: {value!r} is not an integer >= {minimum}")


def _check_values(
    name: str, values: Sequence[float], ok: Callable[[float], bool], allowed: str
) -> None:
    if len(values) == 0:
        raise ConfigError(f"{name}: empty list; give at least one value {allowed}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not ok(float(v)):
            raise ConfigError(f"{name}: {v!r} is not a number {allowed}")
    _unique(name, [float(v) for v in values])


def _unique(name: str, values: list[Any]) -> None:
    seen: set[Any] = set()
    for v in values:
        if v in seen:
            raise ConfigError(f"{name}: {v!r} appears twice")
        seen.add(v)
