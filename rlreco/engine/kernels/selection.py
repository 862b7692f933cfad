"""Order statistics of a scratch array (quickselect), shared by the policy caches."""

from __future__ import annotations

import numpy as np

from rlreco.engine.kernels.jit import jit


@jit()
def kth_smallest_nb(keys: np.ndarray, size: int, k: int) -> float:
    """The ``k``-th smallest (1-based) of ``keys[:size]``, which it reorders (quickselect).

    Parameters
    ----------
    keys : ndarray of float64, shape (>= size,)
        Scratch: its first ``size`` items are permuted.
    size : int
    k : int
        ``1 <= k <= size``.

    Returns
    -------
    float
    """
    lo = 0
    hi = size - 1
    target = k - 1
    while lo < hi:
        # median of three as the pivot; Hoare partition
        mid = (lo + hi) >> 1
        a, b, c = keys[lo], keys[mid], keys[hi]
        pivot = max(min(a, b), min(max(a, b), c))
        i = lo
        j = hi
        while i <= j:
            while keys[i] < pivot:
                i += 1
            while keys[j] > pivot:
                j -= 1
            if i <= j:
                keys[i], keys[j] = keys[j], keys[i]
                i += 1
                j -= 1
        if target <= j:
            hi = j
        elif target >= i:
            lo = i
        else:
            return keys[target]
    return keys[target]
