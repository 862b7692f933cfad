"""The one decorator factory every kernel uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba as nb

F = TypeVar("F", bound=Callable[..., Any])


def jit(
    *,
    parallel: bool = False,
    fastmath: bool = False,
    inline: bool = False,
    refcount: bool = True,
) -> Callable[[F], F]:
    """Return ``numba.njit`` configured for rlreco kernels.

    ``cache=True`` keeps compile time out of every run after the first; ``error_model="numpy"``
    lets division by zero give inf/nan instead of raising, so loops need no Python exception
    machinery. ``fastmath`` stays off by default: it would break bit-identical results.
    ``inline=True`` inlines the kernel into its callers at the Numba IR level: a call that is
    not inlined increments and decrements the reference count of every array argument (two
    atomic operations each), which dominates small per-visit kernels.

    ``refcount=False`` compiles the kernel without Numba's reference counting: inlining alone
    does not remove it (each inlined call binds its array arguments to new variables, whose
    increments and decrements LLVM can only prune within simple control flow). Such a kernel
    only borrows the arrays its caller owns: it can take views of them, but cannot allocate an
    array or receive a new one from a kernel it calls (Numba refuses to compile either), so its
    results are those of the same code with reference counting. Non-inlined kernels it calls
    count references as usual. Under ``NUMBA_DISABLE_JIT=1`` the flag has no effect.
    """

    def wrap(func: F) -> F:
        options: dict[str, Any] = {
            "cache": True,
            "error_model": "numpy",
            "parallel": parallel,
            "fastmath": fastmath,
            "nogil": True,
            "inline": "always" if inline else "never",
            # Numba's target option for reference counting (the NRT); not in its type stubs
            "_nrt": refcount,
        }
        compiled = nb.njit(**options)(func)
        return cast(F, compiled)

    return wrap
