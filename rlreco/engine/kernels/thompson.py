"""Exact Gaussian Thompson slates from counter-based normals and a per-state candidate cache.

Definition (``thompson``, parameter ``sigma``)
    Every catalogue product ``p`` gets the key ``m_p + s_p * Z_p`` (``m_p`` its value, 0 while
    unknown; ``s_p = sigma / sqrt(reco_count_p + 1)``) and the ``n`` largest keys form the
    slate (ties: lower product id). The standard normals ``Z_p`` are independent, drawn from
    one ``rng.random()`` per visit, ``w = floor(rng.random() * 2**53)``, and counter-based
    uniforms: ``U(x) = ((mix(x) >> 11) + 1/2) / 2**53`` in ``(0, 1)``, ``mix`` the splitmix64
    finaliser (a bijection of 64-bit words, arithmetic modulo ``2**64``):

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
    definition) and rebuilds the row from what it read. ``T`` is chosen at a rebuild so that
    about ``ABOVE_PER_SLOT * n`` keys are expected above it (bisection on the sum of the
    normal tails over up to ``SAMPLE`` products, scaled to the catalogue): fewer than ``n``
    keys above ``T`` (a fallback) then needs a large deviation, while the members stay few
    (products whose chance to beat ``T`` exceeds what landing alone covers). After a visit
    only the slate products changed: each is re-tested and added, refreshed or dropped; a row
    that would exceed its capacity is left unbuilt (the next visit falls back and rebuilds).

Cost per visit: ``q K`` landings (independent table reads, overlapped) with one logarithm and
one quantile each, one quantile per member; no catalogue pass unless a fallback. Memory per
state: ``capacity`` x 24 bytes + 3 scalars (12 KiB at the default 512; 7 MB for 576 states).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from rlreco.engine.kernels.jit import jit
from rlreco.engine.kernels.ranking import insert_ranked_nb

#: Expected landings per slate slot (``q = min(1/2, LANDINGS_PER_SLOT * n / K)``).
LANDINGS_PER_SLOT = 8.0
#: Keys expected above ``T`` per slate slot, when a row is rebuilt.
ABOVE_PER_SLOT = 3.0
#: Products sampled (evenly over the catalogue) for the choice of ``T``.
SAMPLE = 64
#: Bisection steps for ``T``.
BISECTIONS = 20
#: Member slots per state (the default of :func:`new_thompson_cache`).
CAPACITY = 1024
#: XOR of ``w`` seeding the landing stream (any constant other than 0).
STREAM_TAG = np.uint64(0xD1B54A32D192ED03)
#: ``2**53`` as a float.
TWO_53 = 9007199254740992.0


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


def new_thompson_cache(n_states: int, capacity: int = CAPACITY) -> ThompsonCache:
    """Caches of ``capacity`` members with every row unbuilt (built on first use)."""
    return ThompsonCache(
        product=np.zeros((n_states, capacity), dtype=np.int64),
        mean=np.zeros((n_states, capacity), dtype=np.float64),
        scale=np.zeros((n_states, capacity), dtype=np.float64),
        upper=np.zeros((n_states, capacity), dtype=np.float64),
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
def mix_nb(x: np.uint64) -> np.uint64:
    """The splitmix64 finaliser (a bijection of 64-bit words)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@jit(inline=True)
def unit_nb(x: np.uint64) -> float:
    """``U(x)``: the top 53 bits of ``mix(x)`` as a uniform in ``(0, 1)``."""
    return (float(mix_nb(x) >> np.uint64(11)) + 0.5) / TWO_53


@jit(inline=True)
def normal_quantile_nb(p: float) -> float:
    """``Phi^-1(p)`` for ``p`` in ``(0, 1)``: Wichura's AS241 (PPND16), relative error about
    1e-16 (the algorithm of Python's ``statistics.NormalDist.inv_cdf``)."""
    q = p - 0.5
    if abs(q) <= 0.425:
        r = 0.180625 - q * q
        num = (
            (
                (
                    (
                        (
                            (2509.0809287301226727 * r + 33430.575583588128105) * r
                            + 67265.770927008700853
                        )
                        * r
                        + 45921.953931549871457
                    )
                    * r
                    + 13731.693765509461125
                )
                * r
                + 1971.5909503065514427
            )
            * r
            + 133.14166789178437745
        ) * r + 3.387132872796366608
        den = (
            (
                (
                    (
                        (
                            (5226.495278852854561 * r + 28729.085735721942674) * r
                            + 39307.89580009271061
                        )
                        * r
                        + 21213.794301586595867
                    )
                    * r
                    + 5394.1960214247511077
                )
                * r
                + 687.1870074920579083
            )
            * r
            + 42.313330701600911252
        ) * r + 1.0
        return q * num / den
    r = p if q < 0.0 else 1.0 - p
    r = np.sqrt(-np.log(r))
    if r <= 5.0:
        r -= 1.6
        num = (
            (
                (
                    (
                        (
                            (7.7454501427834140764e-4 * r + 0.0227238449892691845833) * r
                            + 0.24178072517745061177
                        )
                        * r
                        + 1.27045825245236838258
                    )
                    * r
                    + 3.64784832476320460504
                )
                * r
                + 5.7694972214606914055
            )
            * r
            + 4.6303378461565452959
        ) * r + 1.42343711074968357734
        den = (
            (
                (
                    (
                        (
                            (1.05075007164441684324e-9 * r + 5.475938084995344946e-4) * r
                            + 0.0151986665636164571966
                        )
                        * r
                        + 0.14810397642748007459
                    )
                    * r
                    + 0.68976733498510000455
                )
                * r
                + 1.6763848301838038494
            )
            * r
            + 2.05319162663775882187
        ) * r + 1.0
    else:
        r -= 5.0
        num = (
            (
                (
                    (
                        (
                            (2.01033439929228813265e-7 * r + 2.71155556874348757815e-5) * r
                            + 0.0012426609473880784386
                        )
                        * r
                        + 0.026532189526576123093
                    )
                    * r
                    + 0.29656057182850489123
                )
                * r
                + 1.7848265399172913358
            )
            * r
            + 5.4637849111641143699
        ) * r + 6.6579046435011037772
        den = (
            (
                (
                    (
                        (
                            (2.04426310338993978564e-15 * r + 1.4215117583164458887e-7) * r
                            + 1.8463183175100546818e-5
                        )
                        * r
                        + 7.868691311456132591e-4
                    )
                    * r
                    + 0.0148753612908506148525
                )
                * r
                + 0.13692988092273580531
            )
            * r
            + 0.59983220655588793769
        ) * r + 1.0
    x = num / den
    return -x if q < 0.0 else x


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

    Parameters
    ----------
    rng : numpy.random.Generator
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
    """
    n = slate.shape[0]
    w = draw_seed_nb(rng)
    q = landing_rate_nb(n, catalogue.shape[0])
    zc = -normal_quantile_nb(q)
    landed = draw_landings_nb(value, cells, state, catalogue, sigma, w, q, work)
    rank_catalogue_nb(value, cells, state, catalogue, sigma, n, w, q, zc, landed, work)
    clear_landings_nb(work, landed)
    for i in range(n):
        slate[i] = work.top_product[i]


@jit(inline=True)
def tail_sum_nb(work: ThompsonWork, size: int, stride: int, t: float) -> float:
    """``sum Q((t - m_p) / s_p)`` over every ``stride``-th catalogue product."""
    total = 0.0
    for k in range(0, size, stride):
        total += 0.5 * math.erfc((t - work.mean[k]) / (work.scale[k] * np.sqrt(2.0)))
    return total


@jit()
def rebuild_thompson_row_nb(
    cache: ThompsonCache, state: int, size: int, n: int, zc: float, work: ThompsonWork
) -> None:
    """Choose ``T`` and the members from ``work.mean/scale`` of the catalogue (module
    docstring); the row is left unbuilt if the members exceed its capacity.

    Parameters
    ----------
    cache : ThompsonCache
        Row ``state`` overwritten.
    state : int
    size : int
        ``K``; ``work.mean[:K]``, ``work.scale[:K]`` hold the catalogue's ``m_p``, ``s_p``.
    n : int
        Slate size.
    zc : float
        ``z_c`` of the state.
    work : ThompsonWork
    """
    cache.rebuilds[state] += 1
    stride = max(1, size // SAMPLE)
    target = ABOVE_PER_SLOT * n * ((size + stride - 1) // stride) / size
    low = np.inf
    high = -np.inf
    for k in range(0, size, stride):
        low = min(low, work.mean[k] - 8.0 * work.scale[k])
        high = max(high, work.mean[k] + 8.0 * work.scale[k])
    # the expected count above t falls with t: bisect for the target
    for _ in range(BISECTIONS):
        middle = 0.5 * (low + high)
        if tail_sum_nb(work, size, stride, middle) > target:
            low = middle
        else:
            high = middle
    threshold = low
    capacity = cache.product.shape[1]
    members = 0
    for k in range(size):
        upper = work.mean[k] + work.scale[k] * zc
        if upper >= threshold:
            if members == capacity:
                members = -1
                break
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
        member = -1
        for j in range(size):
            if cache.product[state, j] == product:
                member = j
                break
        upper = m + s * zc
        if upper >= threshold:
            if member < 0:
                if size == cache.product.shape[1]:
                    size = -1
                    break
                member = size
                size += 1
                cache.product[state, member] = product
            cache.mean[state, member] = m
            cache.scale[state, member] = s
            cache.upper[state, member] = upper
        elif member >= 0:
            size -= 1
            cache.product[state, member] = cache.product[state, size]
            cache.mean[state, member] = cache.mean[state, size]
            cache.scale[state, member] = cache.scale[state, size]
            cache.upper[state, member] = cache.upper[state, size]
    cache.size[state] = size
