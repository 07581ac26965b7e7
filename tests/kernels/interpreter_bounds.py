"""A bounds check for Triton's interpreter: every active load, store and atomic of a launch must fall
inside the storage of one of that launch's tensors.

The interpreter reads and writes host memory at whatever address a kernel computes and never
faults on a bad one (it may read a neighbour's bytes, or corrupt them), while a GPU stops with an
illegal memory access. Inside `bounds_checked()`, the interpreter's memory operations check each
active (unmasked) element's [address, address + element size) against the byte ranges of the
tensors passed to the launch, before touching memory, and raise `OutOfBounds` naming the kernel,
the operation and how many elements fell outside. Requires ``TRITON_INTERPRET=1``.

Example::

    with bounds_checked() as stats:
        grid_encode(x, table, levels)   # any kernel launches
    stats.accesses   # active element accesses checked
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np


class OutOfBounds(AssertionError):
    """A kernel in the interpreter touched memory outside every tensor of its launch."""


@dataclass
class BoundsStats:
    """What a `bounds_checked` block saw: launches, and active element accesses checked."""

    launches: int = 0
    accesses: int = 0
    kernels: set[str] = field(default_factory=set)

    def summary(self) -> str:
        """The line the interpreted checks end with."""
        kernels = f"{self.launches} launches ({len(self.kernels)} kernels)"
        return f"bounds: {self.accesses:,} active accesses of {kernels} inside their tensors"


@contextlib.contextmanager
def bounds_checked() -> Iterator[BoundsStats]:
    """Within the block, check every interpreted memory access against its launch's tensors."""
    from triton.runtime import interpreter

    builder_class, executor_class = interpreter.InterpreterBuilder, interpreter.GridExecutor
    stats = BoundsStats()
    launch: dict = {"kernel": "?", "ranges": np.zeros((0, 2), dtype=np.uint64)}
    originals = {
        name: getattr(builder_class, name)
        for name in ("create_masked_load", "create_masked_store", "create_atomic_rmw", "create_atomic_cas")
    }
    original_init = executor_class._init_args_hst

    def init_args(self, args_dev, kwargs):
        args_hst, kwargs_hst = original_init(self, args_dev, kwargs)
        ranges = []
        for value in [*args_hst, *kwargs_hst.values()]:
            if hasattr(value, "untyped_storage"):
                storage = value.untyped_storage()
                ranges.append((storage.data_ptr(), storage.data_ptr() + storage.nbytes()))
        launch["kernel"] = self.fn.__name__
        launch["ranges"] = np.array(ranges, dtype=np.uint64).reshape(-1, 2)
        stats.launches += 1
        stats.kernels.add(self.fn.__name__)
        return args_hst, kwargs_hst

    def check(ptrs, mask, operation: str) -> None:
        addresses = np.asarray(ptrs.data, dtype=np.uint64)
        if mask is not None:
            addresses = addresses[np.broadcast_to(np.asarray(mask.data, dtype=bool), addresses.shape)]
        addresses = addresses.ravel()
        if addresses.size == 0:
            return
        size = np.uint64(np.dtype(interpreter._get_np_dtype(ptrs.get_element_ty())).itemsize)
        inside = np.zeros(addresses.shape, dtype=bool)
        for low, high in launch["ranges"]:
            inside |= (addresses >= low) & (addresses + size <= high)
        stats.accesses += int(addresses.size)
        if not inside.all():
            outside = addresses[~inside]
            raise OutOfBounds(
                f"{launch['kernel']}: {operation} of {outside.size} of {addresses.size} active elements outside every tensor "
                f"of the launch (first at address {int(outside[0]):#x})"
            )

    def masked_load(self, ptrs, mask, other, *rest):
        check(ptrs, mask, "load")
        return originals["create_masked_load"](self, ptrs, mask, other, *rest)

    def masked_store(self, ptrs, value, mask, *rest):
        check(ptrs, mask, "store")
        return originals["create_masked_store"](self, ptrs, value, mask, *rest)

    def atomic_rmw(self, op, ptr, value, mask, *rest):
        check(ptr, mask, "atomic")
        return originals["create_atomic_rmw"](self, op, ptr, value, mask, *rest)

    def atomic_cas(self, ptr, compare, value, *rest):
        check(ptr, None, "atomic compare-and-swap")
        return originals["create_atomic_cas"](self, ptr, compare, value, *rest)

    patched = {"create_masked_load": masked_load, "create_masked_store": masked_store, "create_atomic_rmw": atomic_rmw,
               "create_atomic_cas": atomic_cas}  # fmt: skip
    for name, function in patched.items():
        setattr(builder_class, name, function)
    executor_class._init_args_hst = init_args
    try:
        yield stats
    finally:
        for name, function in originals.items():
            setattr(builder_class, name, function)
        executor_class._init_args_hst = original_init
