"""Untried catalogue products of a state as a bitmask, and UCB1's untried-first draws.

UCB1 recommends the products never recommended in the state (``reco_count == 0``) first, in
the order of the definition's partial Fisher-Yates over the untried products in catalogue
(= product id) order: step ``i`` picks list position ``j = i + below(m - i)`` and swaps ``i``
and ``j``. The list is never materialised: position ``p`` of the untouched list is the
``p``-th untried product (found from per-word bit counts of a bitmask over product ids, then
within the word), and the at most ``n`` positions ``j`` the swaps wrote are looked up first
(position ``i`` is never read again); an entry moved by a swap stays a reference to its
untouched position until it reaches the slate.

Memory per state: ``ceil(width / 64)`` words of mask and of counts (1 KiB for 4,070 products).
The set is a function of the tables (rebuilt by :func:`build_untried_nb` at every run).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rlreco.engine.kernels.draw import draw_below_nb
from rlreco.engine.kernels.jit import jit


class Untried(NamedTuple):
    """Per-state untried catalogue products of UCB1 (module docstring).

    Attributes
    ----------
    mask : ndarray of uint64, shape (n_states, ceil(width / 64))
        Bit ``p % 64`` of word ``p // 64`` is set if product ``p`` is an untried product of
        the state's catalogue.
    word_count : ndarray of int64, shape (n_states, ceil(width / 64))
        Set bits per word.
    size : ndarray of int64, shape (n_states,)
        Untried catalogue products per state.
    """

    mask: np.ndarray
    word_count: np.ndarray
    size: np.ndarray


def new_untried(n_states: int, width: int) -> Untried:
    """Allocate (uninitialised) untried sets; fill them with :func:`build_untried_nb`."""
    words = -(-width // 64)
    return Untried(
        mask=np.empty((n_states, words), dtype=np.uint64),
        word_count=np.empty((n_states, words), dtype=np.int64),
        size=np.empty(n_states, dtype=np.int64),
    )


@jit()
def build_untried_nb(
    cells: np.ndarray,
    catalogue_ptr: np.ndarray,
    catalogue_items: np.ndarray,
    state_segment: np.ndarray,
    untried: Untried,
) -> None:
    """Fill every state's untried set (catalogue products with ``reco_count == 0``).

    Parameters
    ----------
    cells : ndarray of CELL_DTYPE, shape (n_states, width)
    catalogue_ptr : ndarray of int64, shape (n_segments + 1,)
    catalogue_items : ndarray of int32, shape (nnz,)
    state_segment : ndarray of int16, shape (n_states,)
    untried : Untried
        Output (allocated by :func:`new_untried`).
    """
    one = np.uint64(1)
    for state in range(cells.shape[0]):
        untried.mask[state, :] = 0
        untried.word_count[state, :] = 0
        segment = state_segment[state]
        m = 0
        for k in range(catalogue_ptr[segment], catalogue_ptr[segment + 1]):
            product = catalogue_items[k]
            if cells[state, product].reco_count == 0:
                untried.mask[state, product >> 6] |= one << np.uint64(product & 63)
                untried.word_count[state, product >> 6] += 1
                m += 1
        untried.size[state] = m


#: De Bruijn sequence and table: the index of a word's lowest set bit in one multiply.
DE_BRUIJN = np.uint64(0x03F79D71B4CB0A89)
DE_BRUIJN_INDEX = np.array(
    [
        0, 1, 48, 2, 57, 49, 28, 3, 61, 58, 50, 42, 38, 29, 17, 4,
        62, 55, 59, 36, 53, 51, 43, 22, 45, 39, 33, 30, 24, 18, 12, 5,
        63, 47, 56, 27, 60, 41, 37, 16, 54, 35, 52, 21, 44, 32, 23, 11,
        46, 26, 40, 15, 34, 20, 31, 10, 25, 14, 19, 9, 13, 8, 7, 6,
    ],
    dtype=np.int64,
)  # fmt: skip


@jit(inline=True)
def select_untried_nb(untried: Untried, state: int, rank: int) -> int:
    """The untried product of 0-based ``rank`` in product id order (word counts, then bits)."""
    word = 0
    while rank >= untried.word_count[state, word]:
        rank -= untried.word_count[state, word]
        word += 1
    bits = untried.mask[state, word]
    for _ in range(rank):
        bits &= bits - np.uint64(1)
    lowest = bits & (~bits + np.uint64(1))
    return (word << 6) + DE_BRUIJN_INDEX[(lowest * DE_BRUIJN) >> np.uint64(58)]


@jit(inline=True)
def remove_untried_nb(untried: Untried, state: int, product: int) -> None:
    """Take a product out of the state's untried set."""
    untried.mask[state, product >> 6] &= ~(np.uint64(1) << np.uint64(product & 63))
    untried.word_count[state, product >> 6] -= 1
    untried.size[state] -= 1


@jit(inline=True)
def untried_at_nb(
    position: int, swap_position: np.ndarray, swap_item: np.ndarray, swaps: int
) -> int:
    """Entry at ``position`` of the virtual untried list after the recorded swaps.

    An entry is a product id (``>= 0``) or ``-1 - q``: the product at position ``q`` of the
    untouched list, resolved only if it reaches the slate.
    """
    for t in range(swaps - 1, -1, -1):
        if swap_position[t] == position:
            return swap_item[t]
    return -1 - position


@jit(inline=True)
def draw_untried_nb(
    rng: np.random.Generator,
    untried: Untried,
    state: int,
    slate: np.ndarray,
    swap_position: np.ndarray,
    swap_product: np.ndarray,
) -> int:
    """Fill the first ``min(m, n)`` slots with untried products (module docstring).

    Parameters
    ----------
    rng : numpy.random.Generator
    untried : Untried
        Read only.
    state : int
    slate : ndarray of int64, shape (n,)
        Output (its first ``min(m, n)`` slots).
    swap_position, swap_product : ndarray of int64, shape (n,)
        Workspace: the list entries the swaps moved.

    Returns
    -------
    int
        Slots filled, ``min(m, n)``.
    """
    n = slate.shape[0]
    m = untried.size[state]
    first = min(m, n)
    for i in range(first):
        j = i + draw_below_nb(rng, m - i)
        at_i = untried_at_nb(i, swap_position, swap_product, i)
        at_j = untried_at_nb(j, swap_position, swap_product, i)
        if at_j < 0:
            at_j = select_untried_nb(untried, state, -1 - at_j)
        swap_position[i] = j
        swap_product[i] = at_i
        slate[i] = at_j
    return first
