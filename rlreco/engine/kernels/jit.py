"""The one decorator factory every kernel uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba as nb

F = TypeVar("F", bound=Callable[..., Any])


def jit(
    *, parallel: bool = False, fastmath: bool = False, inline: bool = False
) -> Callable[[F], F]:
    """Return ``numba.njit`` configured for rlreco kernels.

    ``cache=True`` keeps compile time out of every run after the first; ``error_model="numpy"``
    lets division by zero give inf/nan instead of raising, so loops need no Python exception
    machinery. ``fastmath`` stays off by default: it would break bit-identical results.
    ``inline=True`` inlines the kernel into its callers at the Numba IR level: a call that is
    not inlined increments and decrements the reference count of every array argument (two
    atomic operations each), which dominates small per-visit kernels.
    """

    def wrap(func: F) -> F:
        compiled = nb.njit(
            cache=True,
            error_model="numpy",
            parallel=parallel,
            fastmath=fastmath,
            nogil=True,
            inline="always" if inline else "never",
        )(func)
        return cast(F, compiled)

    return wrap
