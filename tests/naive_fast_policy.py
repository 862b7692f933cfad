"""Slow pure-Python references of the fast exact policies (``count_groups``, ``sum_tree``,
``thompson`` kernels), written from their module docstrings with Python lists and ``math``.

Every draw is a scalar call on the same ``numpy.random.Generator``, in the kernels' order.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

FANOUT = 8
REBUILD_ABOVE = 64.0
FALLBACK_BELOW = 1e-150
PRIORITY_SCALES = 2.0
SPLIT_ABOVE = 2.0
DRAW_ALL_ABOVE = 0.5
BOUND_MARGIN = 1.0 + 1e-9


def below(rng: np.random.Generator, m: int) -> int:
    """``min(int(rng.random() * m), m - 1)``."""
    return min(int(rng.random() * m), m - 1)


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
    """One state's sum tree: a flat list, level ``l`` at ``(8**l - 1) // 7``."""

    def __init__(self, width: int, catalogue: list[int], tau: float) -> None:
        self.depth = 1
        while FANOUT**self.depth < width:
            self.depth += 1
        self.catalogue = catalogue
        self.tau = tau
        self.node = [0.0] * ((FANOUT ** (self.depth + 1) - 1) // (FANOUT - 1))
        self.offset = -math.inf
        self.known = 0

    def start(self, level: int) -> int:
        return (FANOUT**level - 1) // (FANOUT - 1)

    def rebuild(self, row: np.ndarray) -> None:
        known = [p for p in self.catalogue if row[p] != -math.inf]
        self.offset = max((float(row[p]) for p in known), default=-math.inf)
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
        first = self.start(level + 1) + FANOUT * j
        total = 0.0
        for c in range(FANOUT):
            total += self.node[first + c]
        return total

    def set_leaf(self, product: int, weight: float) -> None:
        self.node[self.start(self.depth) + product] = weight
        j = product
        for level in range(self.depth - 1, -1, -1):
            j //= FANOUT
            self.node[self.start(level) + j] = self.children_sum(level, j)

    def descend(self, u: float) -> int:
        j = 0
        for level in range(1, self.depth + 1):
            first = self.start(level) + FANOUT * j
            chosen, last = -1, 0
            for c in range(FANOUT):
                w = self.node[first + c]
                if w > 0.0:
                    last = c
                    if u < w:
                        chosen = c
                        break
                    u -= w
            j = FANOUT * j + (last if chosen < 0 else chosen)
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
        slate: list[int] = []
        taken: list[tuple[int, float]] = []
        for _ in range(min(n, self.known)):
            if self.node[0] < FALLBACK_BELOW:
                product = self.draw_remaining(row, slate, rng)
            else:
                product = self.descend(rng.random() * self.node[0])
            slate.append(product)
            taken.append((product, self.node[self.start(self.depth) + product]))
            self.set_leaf(product, 0.0)
        for product, weight in taken:
            self.set_leaf(product, weight)
        pad(slate, self.catalogue, n, rng)
        return slate

    def update(self, row: np.ndarray, slate: list[int], previous: list[float]) -> None:
        rebuild = False
        for product, before in zip(slate, previous, strict=True):
            if before == -math.inf and row[product] != -math.inf:
                self.known += 1
            scaled = (float(row[product]) - self.offset) / self.tau
            if scaled > REBUILD_ABOVE or self.offset == -math.inf:
                rebuild = True
            elif not rebuild:
                self.set_leaf(product, math.exp(scaled))
        if rebuild or (self.known > 0 and self.node[0] < math.exp(-REBUILD_ABOVE)):
            self.rebuild(row)


def sum_left_to_right(values: list[float]) -> float:
    """Sum in list order (as the kernels add)."""
    total = 0.0
    for v in values:
        total += v
    return total


class CountLayout:
    """One state's count-group slots: products ordered by count, moved as the kernel moves
    them (to the last slot of their run of equal counts, then across the boundary)."""

    def __init__(self, catalogue: list[int], tries: np.ndarray, row: np.ndarray) -> None:
        order = sorted(catalogue, key=lambda p: (int(tries[p]), p))
        self.product = order
        self.count = [int(tries[p]) for p in order]
        self.mean = [0.0 if row[p] == -math.inf else float(row[p]) for p in order]

    def move(self, product: int, count: int, mean: float) -> None:
        slot = self.product.index(product)
        self.mean[slot] = mean
        while self.count[slot] != count:
            last = slot
            while last + 1 < len(self.count) and self.count[last + 1] == self.count[slot]:
                last += 1
            self.product[slot], self.product[last] = self.product[last], self.product[slot]
            self.count[slot], self.count[last] = self.count[last], self.count[slot]
            self.mean[slot], self.mean[last] = self.mean[last], self.mean[slot]
            slot = last
            following = self.count[slot + 1] if slot + 1 < len(self.count) else math.inf
            self.count[slot] = int(following) if following <= count else count

    def thompson_slate(self, n: int, sigma: float, rng: np.random.Generator) -> list[int]:
        """The lazy search of the ``thompson`` module docstring, over Python lists."""
        size = len(self.product)
        depth = 1
        while FANOUT**depth < size:
            depth += 1

        def span(level: int, j: int) -> tuple[int, int]:
            width = FANOUT ** (depth - level)
            return j * width, min((j + 1) * width, size)

        def node_id(level: int, j: int) -> int:
            return (FANOUT**level - 1) // (FANOUT - 1) + j

        def scale(slot: int) -> float:
            return sigma / math.sqrt(self.count[slot] + 1.0)

        keys: dict[int, float] = {}

        def threshold() -> float:
            if len(keys) < n:
                return -math.inf
            return keys[top(keys, n)[-1]]

        def rank(product: int, key: float) -> None:
            keys[product] = key
            if len(keys) > n:
                del keys[top(keys, n + 1)[-1]]

        heap: list[tuple[float, int, int, int]] = [(-0.0, 0, 0, 0)]
        while heap:
            _, _, level, j = heapq.heappop(heap)
            lo, hi = span(level, j)
            best = max(self.mean[lo:hi])
            s = scale(lo)
            t = threshold()
            rate = 1.0 if len(keys) < n else tail_bound((t - best) / s)
            if rate == 0.0:
                continue
            if level < depth - 1 and rate * (hi - lo) > SPLIT_ABOVE:
                for child in range(FANOUT * j, FANOUT * j + FANOUT):
                    c_lo, c_hi = span(level + 1, child)
                    if c_lo >= size:
                        break
                    priority = max(self.mean[c_lo:c_hi]) + PRIORITY_SCALES * scale(c_lo)
                    heapq.heappush(heap, (-priority, node_id(level + 1, child), level + 1, child))
                continue
            if rate >= DRAW_ALL_ABOVE:
                for slot in range(lo, hi):
                    rank(self.product[slot], self.mean[slot] + scale(slot) * rng.standard_normal())
                continue
            slot = lo
            while True:
                gap = math.log1p(-rng.random()) / math.log1p(-rate)
                if gap >= hi - slot:
                    break
                slot += int(gap)
                a = (t - self.mean[slot]) / scale(slot)
                q = 0.5 * math.erfc(a / math.sqrt(2.0))
                if rng.random() * rate < q:
                    rank(self.product[slot], self.mean[slot] + scale(slot) * draw_tail(rng, a))
                    t = threshold()
                    rate = tail_bound((t - best) / s)
                    if rate == 0.0:
                        break
                slot += 1
                if slot >= hi:
                    break
        return top(keys, n)


def tail_bound(z: float) -> float:
    """Mills-ratio bound of the normal upper tail."""
    if z <= 1.0:
        return 1.0
    return min(1.0, math.exp(-0.5 * z * z) / (z * math.sqrt(2.0 * math.pi)) * BOUND_MARGIN)


def draw_tail(rng: np.random.Generator, a: float) -> float:
    """Standard normal conditioned on exceeding ``a``."""
    if a <= 0.0:
        z = rng.standard_normal()
        while z <= a:
            z = rng.standard_normal()
        return z
    alpha = 0.5 * (a + math.sqrt(a * a + 4.0))
    while True:
        z = a - math.log(1.0 - rng.random()) / alpha
        if rng.random() <= math.exp(-0.5 * (z - alpha) * (z - alpha)):
            return z
