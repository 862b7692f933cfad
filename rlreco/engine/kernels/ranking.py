"""Small helpers shared by the slate policies: ranked insertion, bounded uniform integers."""

from __future__ import annotations

import numpy as np

from rlreco.engine.kernels.jit import jit


@jit(inline=True)
def insert_ranked_nb(
    key: float, item: int, keys: np.ndarray, items: np.ndarray, size: int, capacity: int
) -> int:
    """Insert ``(key, item)`` into a list ranked by key descending, ties by lower item.

    Parameters
    ----------
    key : float
    item : int
    keys : ndarray of float64, shape (>= capacity,)
        Ranked keys, modified in place.
    items : ndarray of int64, shape (>= capacity,)
        Items of ``keys``, modified in place.
    size : int
        Current length of the list.
    capacity : int
        Maximum length; a full list drops its last entry (or rejects the new one).

    Returns
    -------
    int
        New length.
    """
    if size == capacity:
        last = size - 1
        if key < keys[last] or (key == keys[last] and item > items[last]):
            return size
        position = last
    else:
        position = size
        size += 1
    while position > 0 and (
        key > keys[position - 1] or (key == keys[position - 1] and item < items[position - 1])
    ):
        keys[position] = keys[position - 1]
        items[position] = items[position - 1]
        position -= 1
    keys[position] = key
    items[position] = item
    return size


@jit(inline=True)
def draw_below_nb(rng: np.random.Generator, m: int) -> int:
    """Uniform integer in ``[0, m)`` from one ``rng.random()`` draw (as the visit loop)."""
    return min(int(rng.random() * m), m - 1)


@jit(inline=True)
def is_in_nb(product: int, slate: np.ndarray, filled: int) -> bool:
    """Whether ``product`` is among the first ``filled`` entries of ``slate``."""
    found = False
    for j in range(filled):
        found |= slate[j] == product
    return found
