"""Small tables for the fast policy tests: 4 states over 2 segment catalogues."""

from __future__ import annotations

import numpy as np

from rlreco.schema import CELL_DTYPE

WIDTH = 70  # padded beyond the 67 products: the padding stays unknown


class World:
    """Some products known, some tried; values on a coarse grid (ties)."""

    def __init__(self, seed: int, known: int = 12, tried: int = 6) -> None:
        rng = np.random.default_rng(seed)
        n_products = 67
        self.catalogues = [
            np.sort(rng.choice(n_products, size, replace=False)).astype(np.int32)
            for size in (40, 15)
        ]
        self.ptr = np.array([0, 40, 55], dtype=np.int64)
        self.items = np.concatenate(self.catalogues)
        self.segment = np.array([0, 1, 0, 1], dtype=np.int16)
        self.value = np.full((4, WIDTH), -np.inf)
        self.cells = np.zeros((4, WIDTH), dtype=CELL_DTYPE)
        for state in range(4):
            # some known products lie outside the catalogue: they must never be drawn
            chosen = rng.choice(n_products, known, replace=False)
            self.value[state, chosen] = np.round(rng.normal(0.0, 1.0, known), 1)
            self.cells["reco_count"][state, chosen[:tried]] = rng.integers(1, 4, tried)
        self.rng = rng

    def catalogue_of(self, state: int) -> np.ndarray:
        segment = self.segment[state]
        return self.items[self.ptr[segment] : self.ptr[segment + 1]]

    def catalogue(self, state: int) -> list[int]:
        return self.catalogue_of(state).tolist()

    def visit(self, state: int, slate: np.ndarray) -> np.ndarray:
        """Update the slate's cells as a visit does (values on a coarse grid: ties)."""
        previous = self.value[state, slate].copy()
        for product in slate:
            self.cells["reco_count"][state, product] += 1
            self.value[state, product] = np.round(self.rng.normal(0.0, 1.0), 1)
        return previous
