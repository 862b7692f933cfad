"""Exact Gaussian Thompson slates from counter-based normals and a per-state candidate cache.

Definition (``thompson``, parameter ``sigma``)
    Every catalogue product ``p`` gets the key ``m_p + s_p * Z_p`` (``m_p`` its value, 0 while
    unknown; ``s_p = sigma / sqrt(reco_count_p + 1)``) and the ``n`` largest keys form the
    slate (ties: lower product id). The standard normals ``Z_p`` are independent, drawn from
    one ``rng.random()`` per visit, ``w = floor(rng.random() * 2**53)``, and the counter-based
    uniforms ``U(x)`` of :mod:`~rlreco.engine.kernels.normals`:

    * a *landing* rate ``q = min(1/2, LANDINGS_PER_SLOT * n / K)`` and its quantile
      ``z_c = -Phi^-1(q)`` (``Phi^-1``: Wichura's AS241, :func:`normal_quantile_nb`);
    * landings: catalogue positions visited by geometric skips, ``gap_i = floor(log(V_i) /
      log1p(-q))`` with ``V_i = U(mix(w ^ STREAM_TAG) + i)``, ``i = 1, 2, ...``: from position
      0, skip ``gap_i`` positions, land, step past it, until the catalogue ends. Each position
      lands independently with probability ``q``;
    * ``u_p = U(mix(w) + p)``; a landed product takes ``Z_p = -Phi^-1(q * u_p)`` (the normal
      tail above ``z_c``), any other ``Z_p = min(Phi^-1((1 - q) * u_p), z_c)`` (the body; the
      ``min`` only absorbs rounding). So ``Z_p`` is standard normal given either outcome's
      probability, and a product that did not land has ``key <= m_p + s_p * z_c``.

    The slate is a function of ``w`` and the tables: any procedure that finds the exact top
    ``n`` of these keys draws the same slate, so the cache below (and its history) never
    changes a draw, and a run resumed from its tables continues bit for bit.

Cache (:class:`ThompsonCache`, per state)
    A threshold ``T`` and the *members*: the products with ``m_p + s_p * z_c >= T``, with
    ``m_p`` and ``s_p`` stored in the row. A visit computes the keys of the landings (about
    ``LANDINGS_PER_SLOT * n`` reads of the tables) and of the members that did not land (one
    contiguous row), and ranks them; with ``L`` the ``n``-th best of these, if ``L >= T``
    every other product (neither landed nor a member) has ``key <= m_p + s_p z_c < T <= L``,
    so this is the exact top ``n``. Otherwise the visit evaluates the whole catalogue (the
    definition) and rebuilds the row from what it read. At a rebuild ``T`` is the
    ``ABOVE_PER_SLOT * n``-th largest of ``m_p + s_p * LIKELY_Z`` over the catalogue (each
    of those keys exceeds it with probability 0.84, so a fallback needs a large deviation);
    should more than ``capacity`` products then be members (a flat catalogue), ``T`` rises to
    just above the ``capacity``-th largest ``m_p + s_p * z_c``. ``slot`` maps a product to
    its member slot. After a visit only the slate products changed: each is re-tested and
    added, refreshed or dropped; a row that would exceed its capacity is left unbuilt (the
    next visit falls back and rebuilds). ``T`` and the members never change a draw.

Cost per visit: ``q K`` landings (independent table reads, overlapped) with one logarithm and
one quantile each, one comparison per member and a quantile per member whose bound reaches
the ``n``-th best; no catalogue pass unless a fallback. Memory per state: ``capacity`` x 32
bytes, ``width`` x 2 bytes and 3 scalars (40 KiB at 1,024 and 4,096; 23 MB for 576 states).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rlreco.engine.kernels.jit import jit
from rlreco.engine.kernels.normals import TWO_53, mix_nb, normal_quantile_nb, unit_nb
from rlreco.engine.kernels.ranking import insert_ranked_nb
from rlreco.engine.kernels.selection import kth_smallest_nb

#: Expected landings per slate slot (``q = min(1/2, LANDINGS_PER_SLOT * n / K)``).
LANDINGS_PER_SLOT = 8.0
#: Keys expected above ``T`` per slate slot, when a row is rebuilt.
ABOVE_PER_SLOT = 3.0
#: ``T`` is the ``ABOVE_PER_SLOT * n``-th largest of ``m_p + s_p * LIKELY_Z`` (a key exceeds
#: its ``m_p + s_p * LIKELY_Z`` with probability 0.84).
LIKELY_Z = -1.0
#: Member slots per state (the default of :func:`new_thompson_cache`).
CAPACITY = 1024
#: XOR of ``w`` seeding the landing stream (any constant other than 0).
STREAM_TAG = np.uint64(0xD1B54A32D192ED03)


class ThompsonCache(NamedTuple):
    """Per-state Thompson candidate caches (module docstring).

    Attributes
    ----------
    product : ndarray of int64, shape (n_states, capacity)
        Member product ids (first ``size`` entries, any order).
    mean, scale : ndarray of float64, shape (n_states, capacity)
        Member ``m_p`` and ``s_p``.
    upper : ndarray of float64, shape (n_states, capacity)
        Member ``m_p + s_p * z_c``: a bound of the key unless the member landed.
    slot : ndarray of int16, shape (n_states, width)
        Member slot of each product (-1: not a member), valid while the row is built.
    size : ndarray of int64, shape (n_states,)
        Members; -1 while the row is not built.
    threshold : ndarray of float64, shape (n_states,)
        ``T``.
    rebuilds : ndarray of int64, shape (n_states,)
        Rebuilds (fallbacks) so far: a diagnostic for benchmarks, never read by the policy.
    """

    product: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    upper: np.ndarray
    slot: np.ndarray
    size: np.ndarray
    threshold: np.ndarray
    rebuilds: np.ndarray


class ThompsonWork(NamedTuple):
    """Per-call workspace of the Thompson kernels (``K`` the largest catalogue).

    Attributes
    ----------
    top_key, top_product : ndarray of float64 / int64, shape (n + 1,)
    landed : ndarray of int64, shape (K,)
        The visit's landed products.
    landed_key : ndarray of float64, shape (K,)
        Their keys.
    landed_mask : ndarray of uint64, shape (ceil(width / 64),)
        Bit ``p`` set while product ``p`` is landed (all clear between calls).
    mean, scale : ndarray of float64, shape (K,)
        ``m_p``, ``s_p`` of the catalogue (fallback and rebuild).
    """

    top_key: np.ndarray
    top_product: np.ndarray
    landed: np.ndarray
    landed_key: np.ndarray
    landed_mask: np.ndarray
    mean: np.ndarray
    scale: np.ndarray


def new_thompson_cache(n_states: int, width: int, capacity: int = CAPACITY) -> ThompsonCache:
    """Caches of ``capacity`` members for product ids below ``width``, every row unbuilt
    (built on first use)."""
    return ThompsonCache(
        product=np.zeros((n_states, capacity), dtype=np.int64),
        mean=np.zeros((n_states, capacity), dtype=np.float64),
        scale=np.zeros((n_states, capacity), dtype=np.float64),
        upper=np.zeros((n_states, capacity), dtype=np.float64),
        slot=np.full((n_states, width), -1, dtype=np.int16),
        size=np.full(n_states, -1, dtype=np.int64),
        threshold=np.zeros(n_states, dtype=np.float64),
        rebuilds=np.zeros(n_states, dtype=np.int64),
    )


def new_thompson_work(slate_size: int, max_catalogue: int, width: int) -> ThompsonWork:
    """Workspace for slates of ``slate_size``, catalogues of up to ``max_catalogue`` and
    product ids below ``width``."""
    return ThompsonWork(
        top_key=np.empty(slate_size + 1, dtype=np.float64),
        top_product=np.empty(slate_size + 1, dtype=np.int64),
        landed=np.empty(max_catalogue, dtype=np.int64),
        landed_key=np.empty(max_catalogue, dtype=np.float64),
        landed_mask=np.zeros(-(-width // 64), dtype=np.uint64),
        mean=np.empty(max_catalogue, dtype=np.float64),
        scale=np.empty(max_catalogue, dtype=np.float64),
    )


@jit(inline=True)
def landing_rate_nb(n: int, size: int) -> float:
    """``q = min(1/2, LANDINGS_PER_SLOT * n / K)``."""
    return min(0.5, LANDINGS_PER_SLOT * n / size)


@jit(inline=True)
def mean_scale_nb(
    value: np.ndarray, cells: np.ndarray, state: int, product: int, sigma: float
) -> tuple[float, float]:
    """``(m_p, s_p)``: the value (0 while unknown) and ``sigma / sqrt(reco_count + 1)``."""
    m = value[state, product]
    if m == -np.inf:
        m = 0.0
    return m, sigma / np.sqrt(cells[state, product].reco_count + 1.0)


@jit(inline=True)
def draw_landings_nb(
    value: np.ndarray,
    cells: np.ndarray,
    state: int,
    catalogue: np.ndarray,
    sigma: float,
    w: np.uint64,
    q: float,
    work: ThompsonWork,
) -> int:
    """Land (module docstring), setting ``landed``, ``landed_key`` and ``landed_mask``;
    returns the number of landings."""
    size = catalogue.shape[0]
    base = mix_nb(w)
    stream = mix_nb(w ^ STREAM_TAG)
    log_keep = np.log1p(-q)
    # three passes, so the table reads of all landings are in flight together
    landed = 0
    position = 0
    i = np.uint64(0)
    while True:
        i += np.uint64(1)
        gap = np.floor(np.log(unit_nb(stream + i)) / log_keep)
        if gap >= size - position:
            break
        position += int(gap)
        work.landed[landed] = catalogue[position]
        landed += 1
        position += 1
    for j in range(landed):
        product = work.landed[j]
        work.mean[j] = value[state, product]
        work.scale[j] = cells[state, product].reco_count
    for j in range(landed):
        product = work.landed[j]
        m = work.mean[j]
        if m == -np.inf:
            m = 0.0
        s = sigma / np.sqrt(work.scale[j] + 1.0)
        z = -normal_quantile_nb(q * unit_nb(base + np.uint64(product)))
        work.landed_key[j] = m + s * z
        work.landed_mask[product >> 6] |= np.uint64(1) << np.uint64(product & 63)
    return landed


@jit(inline=True)
def body_key_nb(m: float, s: float, base: np.uint64, product: int, q: float, zc: float) -> float:
    """Key of a product that did not land: ``m + s * min(Phi^-1((1 - q) u_p), z_c)``."""
    z = min(normal_quantile_nb((1.0 - q) * unit_nb(base + np.uint64(product))), zc)
    return m + s * z


@jit(inline=True)
def is_landed_nb(work: ThompsonWork, product: int) -> bool:
    """Whether ``product`` landed in this visit."""
    return (work.landed_mask[product >> 6] >> np.uint64(product & 63)) & np.uint64(1) != 0


@jit(inline=True)
def clear_landings_nb(work: ThompsonWork, landed: int) -> None:
    """Clear the landed bits (the mask is all clear between calls)."""
    for i in range(landed):
        work.landed_mask[work.landed[i] >> 6] = np.uint64(0)


@jit(inline=True)
def draw_seed_nb(rng: np.random.Generator) -> np.uint64:
    """``w = floor(rng.random() * 2**53)``: the visit's one draw from the generator."""
    return np.uint64(rng.random() * TWO_53)


@jit(inline=True)
def rank_catalogue_nb(
    value: np.ndarray,
    cells: np.ndarray,
    state: int,
    catalogue: np.ndarray,
    sigma: float,
    n: int,
    w: np.uint64,
    q: float,
    zc: float,
    landed: int,
    work: ThompsonWork,
) -> int:
    """The definition: rank every catalogue product's key (landings from ``work``), keeping
    each product's ``m_p``, ``s_p`` in ``work.mean``/``work.scale``; returns the count."""
    base = mix_nb(w)
    found = 0
    for i in range(landed):
        found = insert_ranked_nb(
            work.landed_key[i], work.landed[i], work.top_key, work.top_product, found, n
        )
    for k in range(catalogue.shape[0]):
        product = catalogue[k]
        m, s = mean_scale_nb(value, cells, state, product, sigma)
        work.mean[k] = m
        work.scale[k] = s
        # a product that did not land has key <= m + s z_c: skip it below the n-th best
        if (found < n or m + s * zc >= work.top_key[n - 1]) and not is_landed_nb(work, product):
            key = body_key_nb(m, s, base, product, q, zc)
            if found < n or key >= work.top_key[n - 1]:
                found = insert_ranked_nb(key, product, work.top_key, work.top_product, found, n)
    return found


@jit()
def choose_thompson_scan_nb(
    rng: np.random.Generator,
    value: np.ndarray,
    cells: np.ndarray,
    state: int,
    catalogue: np.ndarray,
    sigma: float,
    slate: np.ndarray,
    work: ThompsonWork,
) -> None:
    """Thompson slate by evaluating every catalogue product (the definition; a baseline).
    Parameters as :func:`choose_thompson_slate_nb` without the cache."""
    n = slate.shape[0]
    w = draw_seed_nb(rng)
    q = landing_rate_nb(n, catalogue.shape[0])
    zc = -normal_quantile_nb(q)
    landed = draw_landings_nb(value, cells, state, catalogue, sigma, w, q, work)
    rank_catalogue_nb(value, cells, state, catalogue, sigma, n, w, q, zc, landed, work)
    clear_landings_nb(work, landed)
    for i in range(n):
        slate[i] = work.top_product[i]


@jit()
def rebuild_thompson_row_nb(
    cache: ThompsonCache, state: int, size: int, n: int, zc: float, work: ThompsonWork
) -> None:
    """Choose ``T`` and the members from ``work.mean/scale`` of the catalogue (module
    docstring); the row is left unbuilt if the members still exceed its capacity.

    Parameters
    ----------
    cache : ThompsonCache
        Row ``state`` overwritten.
    state : int
    size : int
        ``K``; ``work.mean[:K]``, ``work.scale[:K]`` hold the catalogue's ``m_p``, ``s_p`` and
        ``work.landed[:K]`` its product ids.
    n : int
        Slate size.
    zc : float
        ``z_c`` of the state.
    work : ThompsonWork
        ``landed_key`` is scratch.
    """
    cache.rebuilds[state] += 1
    capacity = cache.product.shape[1]
    keys = work.landed_key
    for k in range(size):
        keys[k] = work.mean[k] + work.scale[k] * LIKELY_Z
    rank = min(size, int(ABOVE_PER_SLOT * n))
    threshold = kth_smallest_nb(keys, size, size - rank + 1)
    members = 0
    for k in range(size):
        members += work.mean[k] + work.scale[k] * zc >= threshold
    if members > capacity:
        # a flat catalogue: the largest bounds only, strictly above the capacity-th (ties)
        for k in range(size):
            keys[k] = work.mean[k] + work.scale[k] * zc
        threshold = np.nextafter(kth_smallest_nb(keys, size, size - capacity + 1), np.inf)
    cache.slot[state, :] = -1
    members = 0
    for k in range(size):
        upper = work.mean[k] + work.scale[k] * zc
        if upper >= threshold:
            if members == capacity:
                members = -1
                break
            cache.slot[state, work.landed[k]] = members
            cache.product[state, members] = work.landed[k]
            cache.mean[state, members] = work.mean[k]
            cache.scale[state, members] = work.scale[k]
            cache.upper[state, members] = upper
            members += 1
    cache.size[state] = members
    cache.threshold[state] = threshold


@jit()
def choose_thompson_slate_nb(
    rng: np.random.Generator,
    cache: ThompsonCache,
    value: np.ndarray,
    cells: np.ndarray,
    state: int,
    catalogue: np.ndarray,
    sigma: float,
    slate: np.ndarray,
    work: ThompsonWork,
) -> int:
    """Thompson slate by landings and the candidate cache (module docstring); the same slate
    and draws as :func:`choose_thompson_scan_nb`.

    Parameters
    ----------
    rng : numpy.random.Generator
    cache : ThompsonCache
        Row ``state`` rebuilt after a fallback.
    value : ndarray of float64, shape (n_states, width)
    cells : ndarray of CELL_DTYPE, shape (n_states, width)
    state : int
    catalogue : ndarray of int32, shape (K,)
        The state's segment catalogue, ``K >= n``.
    sigma : float
        Reward noise scale (> 0).
    slate : ndarray of int64, shape (n,)
        Output.
    work : ThompsonWork

    Returns
    -------
    int
        Explored slots: slate products never recommended in the state before.
    """
    n = slate.shape[0]
    size = catalogue.shape[0]
    w = draw_seed_nb(rng)
    q = landing_rate_nb(n, size)
    zc = -normal_quantile_nb(q)
    landed = draw_landings_nb(value, cells, state, catalogue, sigma, w, q, work)
    served = False
    members = cache.size[state]
    if members >= 0:
        base = mix_nb(w)
        found = 0
        for i in range(landed):
            found = insert_ranked_nb(
                work.landed_key[i], work.landed[i], work.top_key, work.top_product, found, n
            )
        for j in range(members):
            # a member that did not land has key <= upper: below the n-th best, skip it
            if found == n and cache.upper[state, j] < work.top_key[n - 1]:
                continue
            product = cache.product[state, j]
            if not is_landed_nb(work, product):
                key = body_key_nb(cache.mean[state, j], cache.scale[state, j], base, product, q, zc)
                if found < n or key >= work.top_key[n - 1]:
                    found = insert_ranked_nb(key, product, work.top_key, work.top_product, found, n)
        served = found == n and work.top_key[n - 1] >= cache.threshold[state]
    if not served:
        rank_catalogue_nb(value, cells, state, catalogue, sigma, n, w, q, zc, landed, work)
    clear_landings_nb(work, landed)
    explored = 0
    for i in range(n):
        slate[i] = work.top_product[i]
        explored += cells[state, slate[i]].reco_count == 0
    if not served:
        # work.landed is free now: it takes the catalogue's product ids for the rebuild
        for k in range(size):
            work.landed[k] = catalogue[k]
        rebuild_thompson_row_nb(cache, state, size, n, zc, work)
    return explored


@jit()
def update_thompson_nb(
    cache: ThompsonCache,
    value: np.ndarray,
    cells: np.ndarray,
    state: int,
    sigma: float,
    slate: np.ndarray,
    catalogue_size: int,
) -> None:
    """Bring the state's cache up to date after a visit updated the slate's cells.

    Parameters
    ----------
    cache : ThompsonCache
        Row ``state`` updated in place (left unbuilt on overflow).
    value : ndarray of float64, shape (n_states, width)
        Values after the visit.
    cells : ndarray of CELL_DTYPE, shape (n_states, width)
        Cells after the visit.
    state : int
    sigma : float
    slate : ndarray of int64, shape (n,)
        Distinct catalogue products.
    catalogue_size : int
        ``K`` of the state's catalogue (it sets ``z_c``).
    """
    size = cache.size[state]
    if size < 0:
        return
    n = slate.shape[0]
    zc = -normal_quantile_nb(landing_rate_nb(n, catalogue_size))
    threshold = cache.threshold[state]
    for i in range(n):
        product = slate[i]
        m, s = mean_scale_nb(value, cells, state, product, sigma)
        member = cache.slot[state, product]
        upper = m + s * zc
        if upper >= threshold:
            if member < 0:
                if size == cache.product.shape[1]:
                    size = -1
                    break
                member = size
                size += 1
                cache.product[state, member] = product
                cache.slot[state, product] = member
            cache.mean[state, member] = m
            cache.scale[state, member] = s
            cache.upper[state, member] = upper
        elif member >= 0:
            size -= 1
            cache.slot[state, cache.product[state, size]] = member
            cache.slot[state, product] = -1  # after: the moved member may be this one
            cache.product[state, member] = cache.product[state, size]
            cache.mean[state, member] = cache.mean[state, size]
            cache.scale[state, member] = cache.scale[state, size]
            cache.upper[state, member] = cache.upper[state, size]
    cache.size[state] = size
