"""LLVM-level building blocks of the per-visit kernels (usable only inside compiled kernels).

A visit costs about a microsecond; at that scale three things that plain Numba code does not
control dominate, and each gets an intrinsic here:

* **Reference counts.** A call to a kernel that is not inlined increments and decrements the
  reference count of every array (and Generator) argument: two atomic operations each, about a
  quarter of a visit's time. :func:`borrow_nb` gives a kernel a view of an argument without a
  reference count, for the duration of the call.
* **Memory latency.** A visit touches ~40 random cache lines of tables far larger than the L2
  cache. Their addresses are known a little before they are read, so the kernels issue all
  prefetches of a step first (:func:`prefetch_nb`) and let the misses overlap.
* **Branches.** The top-n query filters a few hundred tree nodes against a floor and a visit's
  update recomputes a few dozen group maxima. As scalar loops these cost several instructions
  per node (and a mispredicted branch per node if written with ``if``); as one 8-lane masked
  load and a few vector instructions per group of 8 nodes (one cache line of float64) they cost
  about as much per group: :func:`select_reached_nb`, :func:`count_reached_nb`,
  :func:`max_of_group_nb`, :func:`count_ahead_nb`. Masked loads and the compress-store become
  ``vmaskmovpd`` / ``vpcompressq`` on AVX-512; on other CPUs LLVM expands them to scalar code
  with the same results. None of them does floating-point arithmetic, so all are exact.

Every operation takes its arrays with a tuple of positions (one integer per dimension), so
kernels can address rows of 2-d tables without creating row views.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: Bytes per cache line.
LINE = 64
#: Lanes of the group operations: one cache line of float64.
LANES = 8

_INT1 = ir.IntType(1)
_INT8 = ir.IntType(8)
_INT32 = ir.IntType(32)
_INT64 = ir.IntType(64)
_DOUBLES = ir.VectorType(ir.DoubleType(), LANES)
_LONGS = ir.VectorType(_INT64, LANES)
_BITS = ir.VectorType(_INT1, LANES)
_MINUS_INF = ir.Constant(_DOUBLES, [float("-inf")] * LANES)
_LANE_NUMBERS = ir.Constant(_LONGS, list(range(LANES)))


def kernel_intrinsic(typing: Callable[..., Any]) -> Callable[..., Any]:
    """``numba.extending.intrinsic``, typed as kernels call it (no typing-context argument)."""
    return cast(Callable[..., Any], intrinsic(typing))


def aligned_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Uninitialised C-ordered array whose first element starts a cache line.

    numpy's large allocations start 16 bytes into a page; the top-n index relies on every group
    of 8 float64 siblings sharing one line.
    """
    dtype = np.dtype(dtype)
    n_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(n_bytes + LINE, dtype=np.uint8)
    offset = (-raw.ctypes.data) % LINE
    return raw[offset : offset + n_bytes].view(dtype).reshape(shape)


def _is_array_at(array: Any, position: Any, dtype: Any = None) -> bool:
    return (
        isinstance(array, types.Array)
        and (dtype is None or array.dtype == dtype)
        and isinstance(position, types.UniTuple)
        and position.count == array.ndim
        and isinstance(position.dtype, types.Integer)
    )


def _pointer(context: Any, builder: Any, array_type: Any, array: Any, at_type: Any, at: Any) -> Any:
    """Address of ``array[at]`` (no bounds check, no negative-index wraparound)."""
    view = context.make_array(array_type)(context, builder, array)
    positions = cgutils.unpack_tuple(builder, at, at_type.count)  # type: ignore[no-untyped-call]
    return cgutils.get_item_pointer(  # type: ignore[no-untyped-call]
        context, builder, array_type, view, positions, wraparound=False
    )


def _function(builder: Any, returns: Any, arguments: list[Any], name: str) -> Any:
    """Declaration of an LLVM intrinsic (overloaded ones by their mangled name)."""
    function_type = ir.FunctionType(returns, arguments)
    return cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]
        builder.module, function_type, name
    )


def _splat(builder: Any, value: Any, vector_type: ir.VectorType) -> Any:
    undefined = ir.Constant(vector_type, ir.Undefined)
    first = builder.insert_element(undefined, value, ir.Constant(_INT32, 0))
    zeros = ir.Constant(ir.VectorType(_INT32, LANES), [0] * LANES)
    return builder.shuffle_vector(first, undefined, zeros)


def _load_group(builder: Any, pointer: Any, count: Any) -> tuple[Any, Any]:
    """Masked load of lanes ``0 .. count-1`` (others read as ``-inf``); returns (values, mask)."""
    in_bounds = builder.icmp_signed("<", _LANE_NUMBERS, _splat(builder, count, _LONGS))
    load = _function(
        builder, _DOUBLES, [pointer.type, _INT32, _BITS, _DOUBLES], "llvm.masked.load.v8f64.p0"
    )
    values = builder.call(load, [pointer, ir.Constant(_INT32, 8), in_bounds, _MINUS_INF])
    return values, in_bounds


def _population(context: Any, builder: Any, mask: Any) -> Any:
    """Number of set lanes of an 8-lane mask, as an ``intp``."""
    count = builder.call(
        _function(builder, _INT8, [_INT8], "llvm.ctpop.i8"), [builder.bitcast(mask, _INT8)]
    )
    return builder.zext(count, context.get_value_type(types.intp))


@kernel_intrinsic
def borrow_nb(typingctx: Any, value: Any) -> Any:
    """The same array or ``numpy.random.Generator``, without its reference-counted owner.

    The result reads and writes the same memory, but passing it to other kernels costs no
    atomic reference-count updates. It must not outlive the argument it was made from: use it
    only inside the kernel that received the argument (or keep the owner alive), never return
    or store it.
    """
    if not isinstance(value, (types.Array, types.NumPyRandomGeneratorType)):
        return None
    sig = value(value)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        value_type = signature.args[0]
        if isinstance(value_type, types.Array):
            proxy = context.make_array(value_type)(context, builder, value=args[0])
        else:
            proxy = cgutils.create_struct_proxy(value_type)(  # type: ignore[no-untyped-call]
                context, builder, value=args[0]
            )
        proxy.meminfo = cgutils.get_null_value(proxy.meminfo.type)  # type: ignore[no-untyped-call]
        proxy.parent = cgutils.get_null_value(proxy.parent.type)  # type: ignore[no-untyped-call]
        return proxy._getvalue()

    return sig, codegen


@kernel_intrinsic
def prefetch_nb(typingctx: Any, array: Any, at: Any) -> Any:
    """Hint the CPU to load the cache line(s) holding ``array[at]``.

    Compiles to ``llvm.prefetch`` (read, high locality) of the item's first byte, and of its
    last byte for items over 16 bytes, which may straddle two lines. No effect on results;
    never faults.
    """
    if not _is_array_at(array, at):
        return None
    sig = types.void(array, at)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        array_type, at_type = signature.args
        pointer = _pointer(context, builder, array_type, args[0], at_type, args[1])
        byte_pointer = ir.IntType(8).as_pointer()
        function = _function(
            builder, ir.VoidType(), [byte_pointer, _INT32, _INT32, _INT32], "llvm.prefetch.p0"
        )
        first = builder.bitcast(pointer, byte_pointer)
        last = builder.gep(first, [ir.Constant(_INT32, array_type.dtype.bitwidth // 8 - 1)])
        # items of up to 16 bytes never straddle a line (numpy aligns arrays to 16 bytes)
        for address in (first, last) if array_type.dtype.bitwidth > 128 else (first,):
            builder.call(
                function,
                [
                    address,
                    ir.Constant(_INT32, 0),  # read
                    ir.Constant(_INT32, 3),  # keep in all cache levels
                    ir.Constant(_INT32, 1),  # data cache
                ],
            )
        return context.get_dummy_value()

    return sig, codegen


@kernel_intrinsic
def select_reached_nb(
    typingctx: Any,
    keys: Any,
    key_at: Any,
    count: Any,
    floor: Any,
    out: Any,
    out_at: Any,
    first_label: Any,
) -> Any:
    """Append ``first_label + i`` to ``out`` for each finite ``keys[key_at + i] >= floor``.

    Parameters (in a compiled kernel)
    ---------------------------------
    keys : float64 array, C-contiguous along its last axis
    key_at : tuple of int, one per dimension of ``keys``
        Position of the first key; keys ``0 .. count-1`` from there are examined.
    count : int
        Number of keys, at most 8 (lanes beyond ``count`` are not read).
    floor : float
    out : int64 array, C-contiguous along its last axis
    out_at : tuple of int, one per dimension of ``out``
        Where to append; as many slots as labels appended are written.
    first_label : int
        Label of the first key.

    Returns
    -------
    int
        Number of labels appended, in key order.
    """
    if not (
        _is_array_at(keys, key_at, types.float64)
        and _is_array_at(out, out_at, types.int64)
        and isinstance(count, types.Integer)
        and isinstance(floor, types.Float)
        and isinstance(first_label, types.Integer)
    ):
        return None
    sig = types.intp(keys, key_at, count, floor, out, out_at, first_label)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        keys_t, key_at_t, count_t, floor_t, out_t, out_at_t, label_t = signature.args
        keys_v, key_at_v, count_v, floor_v, out_v, out_at_v, label_v = args
        values, in_bounds = _load_group(
            builder,
            _pointer(context, builder, keys_t, keys_v, key_at_t, key_at_v),
            context.cast(builder, count_v, count_t, types.int64),
        )
        floor64 = context.cast(builder, floor_v, floor_t, types.float64)
        reached = builder.fcmp_ordered(">=", values, _splat(builder, floor64, _DOUBLES))
        finite = builder.fcmp_ordered("!=", values, _MINUS_INF)
        mask = builder.and_(builder.and_(reached, finite), in_bounds)
        label64 = context.cast(builder, label_v, label_t, types.int64)
        labels = builder.add(_LANE_NUMBERS, _splat(builder, label64, _LONGS))
        out_pointer = _pointer(context, builder, out_t, out_v, out_at_t, out_at_v)
        store = _function(
            builder,
            ir.VoidType(),
            [_LONGS, out_pointer.type, _BITS],
            "llvm.masked.compressstore.v8i64",
        )
        builder.call(store, [labels, out_pointer, mask])
        return _population(context, builder, mask)

    return sig, codegen


@kernel_intrinsic
def count_reached_nb(typingctx: Any, keys: Any, key_at: Any, count: Any, floor: Any) -> Any:
    """Number of finite ``keys[key_at + i] >= floor`` for ``i < count`` (at most 8).

    Parameters (in a compiled kernel)
    ---------------------------------
    keys : float64 array, C-contiguous along its last axis
    key_at : tuple of int, one per dimension of ``keys``
    count : int
    floor : float

    Returns
    -------
    int
    """
    if not (
        _is_array_at(keys, key_at, types.float64)
        and isinstance(count, types.Integer)
        and isinstance(floor, types.Float)
    ):
        return None
    sig = types.intp(keys, key_at, count, floor)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        keys_t, key_at_t, count_t, floor_t = signature.args
        keys_v, key_at_v, count_v, floor_v = args
        values, in_bounds = _load_group(
            builder,
            _pointer(context, builder, keys_t, keys_v, key_at_t, key_at_v),
            context.cast(builder, count_v, count_t, types.int64),
        )
        floor64 = context.cast(builder, floor_v, floor_t, types.float64)
        reached = builder.fcmp_ordered(">=", values, _splat(builder, floor64, _DOUBLES))
        finite = builder.fcmp_ordered("!=", values, _MINUS_INF)
        return _population(context, builder, builder.and_(builder.and_(reached, finite), in_bounds))

    return sig, codegen


@kernel_intrinsic
def max_of_group_nb(typingctx: Any, keys: Any, key_at: Any, count: Any) -> Any:
    """Maximum of ``keys[key_at + i]`` for ``i < count`` (at most 8); ``-inf`` if ``count == 0``.

    Parameters (in a compiled kernel)
    ---------------------------------
    keys : float64 array, C-contiguous along its last axis
    key_at : tuple of int, one per dimension of ``keys``
    count : int

    Returns
    -------
    float
    """
    if not (_is_array_at(keys, key_at, types.float64) and isinstance(count, types.Integer)):
        return None
    sig = types.float64(keys, key_at, count)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        keys_t, key_at_t, count_t = signature.args
        keys_v, key_at_v, count_v = args
        values, _ = _load_group(
            builder,
            _pointer(context, builder, keys_t, keys_v, key_at_t, key_at_v),
            context.cast(builder, count_v, count_t, types.int64),
        )
        # halve the vector three times: max(a, b) as "a > b ? a : b" is exactly vmaxpd
        width = LANES
        while width > 1:
            width //= 2
            undefined = ir.Constant(values.type, ir.Undefined)
            low, high = (
                builder.shuffle_vector(
                    values, undefined, ir.Constant(ir.VectorType(_INT32, width), lanes)
                )
                for lanes in (list(range(width)), list(range(width, 2 * width)))
            )
            values = builder.select(builder.fcmp_ordered(">", low, high), low, high)
        return builder.extract_element(values, ir.Constant(_INT32, 0))

    return sig, codegen


@kernel_intrinsic
def count_ahead_nb(
    typingctx: Any, keys: Any, labels: Any, at: Any, count: Any, key: Any, label: Any
) -> Any:
    """Number of ``i < count`` (at most 8) whose ``(keys[at + i], labels[at + i])`` ranks ahead
    of ``(key, label)``: a larger key, or an equal key with a smaller label.

    Parameters (in a compiled kernel)
    ---------------------------------
    keys : float64 array, C-contiguous along its last axis
    labels : int64 array, C-contiguous along its last axis, as many dimensions as ``keys``
    at : tuple of int, one per dimension
    count : int
    key : float
    label : int

    Returns
    -------
    int
    """
    if not (
        _is_array_at(keys, at, types.float64)
        and _is_array_at(labels, at, types.int64)
        and isinstance(count, types.Integer)
        and isinstance(key, types.Float)
        and isinstance(label, types.Integer)
    ):
        return None
    sig = types.intp(keys, labels, at, count, key, label)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        keys_t, labels_t, at_t, count_t, key_t, label_t = signature.args
        keys_v, labels_v, at_v, count_v, key_v, label_v = args
        values, in_bounds = _load_group(
            builder,
            _pointer(context, builder, keys_t, keys_v, at_t, at_v),
            context.cast(builder, count_v, count_t, types.int64),
        )
        label_pointer = _pointer(context, builder, labels_t, labels_v, at_t, at_v)
        load = _function(
            builder,
            _LONGS,
            [label_pointer.type, _INT32, _BITS, _LONGS],
            "llvm.masked.load.v8i64.p0",
        )
        others = builder.call(
            load, [label_pointer, ir.Constant(_INT32, 8), in_bounds, ir.Constant(_LONGS, 0)]
        )
        key64 = _splat(builder, context.cast(builder, key_v, key_t, types.float64), _DOUBLES)
        label64 = _splat(builder, context.cast(builder, label_v, label_t, types.int64), _LONGS)
        larger = builder.fcmp_ordered(">", values, key64)
        tied = builder.and_(
            builder.fcmp_ordered("==", values, key64), builder.icmp_signed("<", others, label64)
        )
        return _population(context, builder, builder.and_(builder.or_(larger, tied), in_bounds))

    return sig, codegen
