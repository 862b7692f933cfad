"""A cache-line prefetch hint: the one LLVM intrinsic the kernels keep.

A visit touches a few dozen random cache lines of tables far larger than the caches. The
addresses of a slate's cells are known once the slate is chosen, well before the update reads
them (the response draws come in between), so the fused loop hints them all at once
(:func:`prefetch_nb`) and their misses overlap with the draws instead of stalling the update
one by one. ``bench/bench_simulate.py`` (``bench_prefetch``) measures what the hint is worth.

:func:`prefetch_nb` is a plain Python function (its own pure-Python twin, used under
``NUMBA_DISABLE_JIT=1``: it only checks that the position is inside the array) with a Numba
overload that compiles to ``llvm.prefetch``. A prefetch never faults and changes no result.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload


def prefetch_nb(array: np.ndarray, row: int, column: int) -> None:
    """Hint the CPU to load the cache line(s) holding ``array[row, column]`` (2-d arrays).

    Compiled: ``llvm.prefetch`` (read, keep in all cache levels) of the item's first byte, and
    of its last byte for items over 16 bytes, which may straddle two lines. As plain Python:
    no effect, apart from an ``IndexError`` for a position outside the array.
    """
    if not (0 <= row < array.shape[0] and 0 <= column < array.shape[1]):
        raise IndexError(f"prefetch of [{row}, {column}] outside an array of shape {array.shape}")


def _prefetch_item_typing(typingctx: Any, array: Any, row: Any, column: Any) -> Any:
    if not (
        isinstance(array, types.Array)
        and array.ndim == 2
        and isinstance(row, types.Integer)
        and isinstance(column, types.Integer)
    ):
        return None
    sig = types.void(array, row, column)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        array_type, row_type, column_type = signature.args
        view = context.make_array(array_type)(context, builder, args[0])
        positions = [
            context.cast(builder, args[1], row_type, types.intp),
            context.cast(builder, args[2], column_type, types.intp),
        ]
        pointer = cgutils.get_item_pointer(  # type: ignore[no-untyped-call]
            context, builder, array_type, view, positions, wraparound=False
        )
        byte = ir.IntType(8).as_pointer()
        int32 = ir.IntType(32)
        function = cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]
            builder.module,
            ir.FunctionType(ir.VoidType(), [byte, int32, int32, int32]),
            "llvm.prefetch.p0",
        )
        first = builder.bitcast(pointer, byte)
        size = array_type.dtype.bitwidth // 8
        # numpy aligns items of up to 16 bytes so that none straddles a line
        addresses = [first] if size <= 16 else [first, builder.gep(first, [int32(size - 1)])]
        for address in addresses:
            # read, keep in all cache levels, data cache
            builder.call(function, [address, int32(0), int32(3), int32(1)])
        return context.get_dummy_value()

    return sig, codegen


#: ``_prefetch_item(array, row, column)`` in compiled code.
_prefetch_item: Any = intrinsic(_prefetch_item_typing)


@overload(prefetch_nb, inline="always")
def _prefetch_nb_compiled(array: Any, row: Any, column: Any) -> Any:
    # same parameters, annotations included, as the overload (Numba compares them)
    def compiled(array: Any, row: Any, column: Any) -> Any:
        _prefetch_item(array, row, column)

    return compiled
