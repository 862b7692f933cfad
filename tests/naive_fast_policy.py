"""Slow pure-Python references of the fast exact policies (``ucb1_cache``, ``sum_tree``,
``thompson`` kernels), written from their module docstrings with Python lists and ``math``.

Every draw is a scalar call on the same ``numpy.random.Generator``, in the kernels' order.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
from naive import below

FANOUT = 8
GRID_TAUS = 256.0
FALLBACK_BELOW = 1e-150


def top(keys: dict[int, float], n: int) -> list[int]:
    """The ``n`` products of largest key, ties by lower product id."""
    return sorted(keys, key=lambda p: (-keys[p], p))[:n]


def pad(slate: list[int], catalogue: list[int], n: int, rng: np.random.Generator) -> None:
    """Fill the slate with catalogue products drawn ``below(K)`` until new."""
    while len(slate) < n:
        product = catalogue[below(rng, len(catalogue))]
        while product in slate:
            product = catalogue[below(rng, len(catalogue))]
        slate.append(product)


def ucb1_slate(
    row: np.ndarray,
    tries: np.ndarray,
    catalogue: list[int],
    n: int,
    c: float,
    shown: int,
    rng: np.random.Generator,
) -> list[int]:
    """The UCB1 definition: untried first (partial Fisher-Yates), then the best keys."""
    untried = [p for p in catalogue if tries[p] == 0]
    slate: list[int] = []
    for i in range(min(len(untried), n)):
        j = i + below(rng, len(untried) - i)
        untried[i], untried[j] = untried[j], untried[i]
        slate.append(untried[i])
    log_shown = math.log(max(shown, 1))
    keys = {
        p: float(row[p]) + c * math.sqrt(log_shown / int(tries[p]))
        for p in catalogue
        if tries[p] > 0
    }
    return slate + top(keys, n - len(slate))


class SoftmaxTree:
    """One state's sum tree: a flat list, level ``l`` at 0, 8, 16, 80, ... (padded to 8),
    always a rebuild from the values (the kernel's row must equal it after every update)."""

    def __init__(self, width: int, catalogue: list[int], tau: float) -> None:
        self.depth = 1
        while FANOUT**self.depth < width:
            self.depth += 1
        self.catalogue = catalogue
        self.tau = tau
        self.node = [0.0] * (self.start(self.depth) + FANOUT**self.depth)
        self.offset = -math.inf
        self.known = 0

    def start(self, level: int) -> int:
        return 0 if level == 0 else FANOUT + (FANOUT**level - FANOUT) // (FANOUT - 1)

    def rebuild(self, row: np.ndarray) -> None:
        known = [p for p in self.catalogue if row[p] != -math.inf]
        grid = GRID_TAUS * self.tau
        cell = max((math.ceil(float(row[p]) / grid - 0.5) for p in known), default=-math.inf)
        self.offset = (cell + 0.5) * grid
        self.known = len(known)
        leaf0 = self.start(self.depth)
        for i in range(leaf0, len(self.node)):
            self.node[i] = 0.0
        for p in known:
            self.node[leaf0 + p] = math.exp((float(row[p]) - self.offset) / self.tau)
        for level in range(self.depth - 1, -1, -1):
            for j in range(FANOUT**level):
                self.node[self.start(level) + j] = self.children_sum(level, j)

    def children_sum(self, level: int, j: int) -> float:
        """Pairwise: ((a+b)+(c+d))+((e+f)+(g+h))."""
        a, b, c, d, e, f, g, h = self.node[self.start(level + 1) + FANOUT * j :][:FANOUT]
        return ((a + b) + (c + d)) + ((e + f) + (g + h))

    def set_leaf(self, product: int, weight: float) -> None:
        self.node[self.start(self.depth) + product] = weight
        j = product
        for level in range(self.depth - 1, -1, -1):
            j //= FANOUT
            self.node[self.start(level) + j] = self.children_sum(level, j)

    def descend(self, u: float) -> int:
        j = 0
        for level in range(1, self.depth + 1):
            children = self.node[self.start(level) + FANOUT * j :][:FANOUT]
            # running sums left to right; the first child whose running sum exceeds u
            running = [sum_left_to_right(children[: c + 1]) for c in range(FANOUT)]
            chosen = next((c for c in range(FANOUT) if u < running[c]), None)
            if chosen is None:
                chosen = max((c for c in range(FANOUT) if children[c] > 0.0), default=0)
            u -= running[chosen - 1] if chosen > 0 else 0.0
            j = FANOUT * j + chosen
        return j

    def draw_remaining(self, row: np.ndarray, slate: list[int], rng: np.random.Generator) -> int:
        rest = [p for p in self.catalogue if p not in slate]
        best = max(float(row[p]) for p in rest)
        weights = [
            (p, math.exp((float(row[p]) - best) / self.tau)) for p in rest if row[p] != -math.inf
        ]
        u = rng.random() * sum_left_to_right([w for _, w in weights])
        chosen = -1
        for p, w in weights:
            if w > 0.0:
                chosen = p
                if u < w:
                    break
                u -= w
        return chosen

    def slate(self, row: np.ndarray, n: int, rng: np.random.Generator) -> list[int]:
        """Rounds of rejection; the slate's leaves taken out whenever those left in the tree
        weigh more than half of it."""
        slate: list[int] = []
        draws = min(n, self.known)
        total = self.node[0]
        leaf0 = self.start(self.depth)
        taken: list[tuple[int, float]] = []
        accepted = 0.0
        while len(slate) < draws:
            if accepted > 0.5 * total:
                for product in slate[len(taken) :]:
                    taken.append((product, self.node[leaf0 + product]))
                    self.set_leaf(product, 0.0)
                accepted = 0.0
                total = self.node[0]
                if total < FALLBACK_BELOW:
                    while len(slate) < draws:
                        slate.append(self.draw_remaining(row, slate, rng))
                    break
            us = [rng.random() * total for _ in range(draws - len(slate))]
            for product in [self.descend(u) for u in us]:
                if product not in slate:
                    slate.append(product)
                    accepted += self.node[leaf0 + product]
        for product, weight in taken:
            self.set_leaf(product, weight)
        pad(slate, self.catalogue, n, rng)
        return slate

    def update(self, row: np.ndarray) -> None:
        self.rebuild(row)


def sum_left_to_right(values: list[float]) -> float:
    """Sum in list order (as the kernels add)."""
    total = 0.0
    for v in values:
        total += v
    return total


MASK = (1 << 64) - 1
STREAM_TAG = 0xD1B54A32D192ED03
LANDINGS_PER_SLOT = 8.0


def mix(x: int) -> int:
    """splitmix64 finaliser on Python ints modulo 2**64."""
    x &= MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def unit(x: int) -> float:
    return ((mix(x) >> 11) + 0.5) / 2.0**53


def thompson_slate(
    row: np.ndarray,
    tries: np.ndarray,
    catalogue: list[int],
    n: int,
    sigma: float,
    rng: np.random.Generator,
) -> list[int]:
    """The counter-based Thompson definition, every catalogue product's key computed."""
    inv_cdf = NormalDist().inv_cdf
    w = int(rng.random() * 2.0**53)
    q = min(0.5, LANDINGS_PER_SLOT * n / len(catalogue))
    zc = -inv_cdf(q)
    base, stream = mix(w), mix(w ^ STREAM_TAG)
    landed: set[int] = set()
    position, i = 0, 0
    while True:
        i += 1
        gap = math.floor(math.log(unit(stream + i)) / math.log1p(-q))
        if gap >= len(catalogue) - position:
            break
        position += gap
        landed.add(catalogue[position])
        position += 1
    keys = {}
    for p in catalogue:
        mean = 0.0 if row[p] == -math.inf else float(row[p])
        scale = sigma / math.sqrt(int(tries[p]) + 1.0)
        u = unit(base + p)
        z = -inv_cdf(q * u) if p in landed else min(inv_cdf((1.0 - q) * u), zc)
        keys[p] = mean + scale * z
    return top(keys, n)
