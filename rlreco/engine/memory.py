"""Memory a state space's tables need, estimated before anything is allocated.

Bytes per (state, product) cell, whether the cell is known or not (the tables are dense):

* tables (``prepare``, every command that loads a run): value 8 + cell record 24 = **32**;
* ``simulate`` and sweep cells add the value buffer the tables are loaded through before their
  padded layout takes over (8, while loading) and the top-n index (about 8/7, rounded up to
  2): **42** in all;
* a response model that knows the truth (``popularity``, ``holdout``, a truth file) adds the
  truth records (16) and the historical counts of a resumed run (8): **66** in all. The truth
  is built straight into its records, a segment and a chunk of states at a time
  (:mod:`rlreco.engine.response`), so its temporaries do not grow with the state space.
  Measured on 21,312 x 4,053 cells under ``popularity``: 4.4 GB peak, 51 bytes per cell.

Snapshots are written and read in row groups of at most
:data:`~rlreco.engine.tables.GROUP_CELLS` known cells, so they add a bounded amount (about
200 bytes per cell of one group) whatever the number of visits.
"""

from __future__ import annotations

from rlreco.errors import ConfigError

TABLE_BYTES_PER_CELL = 32
SIMULATE_BYTES_PER_CELL = TABLE_BYTES_PER_CELL + 8 + 2
TRUTH_BYTES_PER_CELL = 16 + 8


def estimate_bytes(n_states: int, n_products: int, *, simulate: bool, truth: bool) -> int:
    """Estimated bytes of the dense arrays of a state space (module docstring)."""
    per_cell = SIMULATE_BYTES_PER_CELL if simulate else TABLE_BYTES_PER_CELL
    if truth:
        per_cell += TRUTH_BYTES_PER_CELL
    return n_states * n_products * per_cell


def check_memory_limit(
    n_states: int, n_products: int, limit_mb: int, *, simulate: bool, truth: bool, what: str
) -> int:
    """The estimate, or :class:`ConfigError` if it exceeds ``limit_mb`` (0 = no limit).

    Parameters
    ----------
    what : str
        What would need the memory (``"prepare"``, ``"simulate"``), for the message.
    """
    need = estimate_bytes(n_states, n_products, simulate=simulate, truth=truth)
    if limit_mb and need > limit_mb * 2**20:
        raise ConfigError(
            f"key 'simulation.memory_limit_mb' = {limit_mb}: {what} of {n_states:,} states x "
            f"{n_products:,} products ({n_states * n_products:,} cells) needs an estimated "
            f"{need:,} bytes ({need / 2**20:,.0f} MB); raise the limit or use fewer state fields"
        )
    return need
