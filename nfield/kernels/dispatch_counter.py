"""Count what a block of PyTorch (and Triton) work would cost a GPU in launches and host synchronisations.

On a GPU, a short frame is bound less by arithmetic than by how many kernels it launches and how
often the host waits for the device (every ``.item()``, ``nonzero``, boolean-mask index or
``bincount`` sizes an output from device data). Both counts are properties of the code, not of the
device, so they can be measured on a CPU: `DispatchCounter` intercepts every ATen operation under a
``TorchDispatchMode`` and every Triton kernel launch (compiled or interpreted) inside its block.

- ``launches``: ATen operations that do work (views, reshapes and allocations excluded), plus Triton
  launches (what Triton's CPU interpreter does with ATen inside a launch is not counted);
- ``syncs``: the operations among them whose output size or value the host must wait for;
- ``by_op``: a Counter of the ATen operations, for finding what to fuse.

Example::

    >>> with DispatchCounter() as counts:
    ...     x = torch.arange(10.0)
    ...     y = x[x > 3].sum()  # a boolean-mask read: its size waits for the device
    >>> counts.launches, counts.syncs
    (4, 1)
"""

from __future__ import annotations

import collections
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

#: Operations that only describe or allocate memory: no kernel of their own on a GPU.
_FREE = {
    "aten.alias", "aten.as_strided", "aten.detach", "aten.empty", "aten.empty_like", "aten.empty_strided", "aten.expand",
    "aten.lift_fresh", "aten.permute", "aten.reshape", "aten._reshape_alias", "aten.select", "aten.slice", "aten.split",
    "aten.split_with_sizes", "aten.squeeze", "aten.sym_numel", "aten.sym_size", "aten.sym_stride", "aten.t", "aten.transpose",
    "aten.unbind", "aten.unsqueeze", "aten.view", "aten._unsafe_view", "aten.view_as_real", "aten.unfold",
}  # fmt: skip
#: Operations whose output (its size or a host value) waits for the device.
_SYNCING = {
    "aten.nonzero", "aten.masked_select", "aten._local_scalar_dense", "aten.is_nonzero", "aten.equal", "aten.unique",
    "aten._unique2", "aten.unique_consecutive", "aten.bincount", "aten.repeat_interleave", "aten.masked_scatter",
}  # fmt: skip


def _boolean_index(func_name: str, args: tuple) -> bool:
    """An ``x[mask]`` read or ``x[mask] = v`` write: the mask's True count sizes the work."""
    if func_name not in ("aten.index", "aten.index_put", "aten.index_put_", "aten._index_put_impl_"):
        return False
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ())


class DispatchCounter(TorchDispatchMode):
    """Within the block, count ATen launches, host synchronisations and Triton launches."""

    def __init__(self) -> None:
        super().__init__()
        self.by_op: collections.Counter[str] = collections.Counter()
        self.syncs = 0
        self.triton_launches = 0
        self._inside_kernel = False  # Triton's interpreter copies arguments with ATen ops: not the program's
        self._restore: list[tuple[Any, str, Any]] = []

    @property
    def launches(self) -> int:
        """ATen operations that launch work, plus Triton kernel launches."""
        return sum(count for name, count in self.by_op.items() if name not in _FREE) + self.triton_launches

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self._inside_kernel:
            return func(*args, **(kwargs or {}))
        name = str(func.overloadpacket)
        self.by_op[name] += 1
        if name in _SYNCING or _boolean_index(name, args):
            self.syncs += 1
        return func(*args, **(kwargs or {}))

    def __enter__(self) -> DispatchCounter:
        self._count_triton()
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        while self._restore:
            owner, name, original = self._restore.pop()
            setattr(owner, name, original)

    def _count_triton(self) -> None:
        """Wrap ``run`` of Triton's JIT and interpreted kernels (each call is one launch)."""
        try:
            from triton.runtime import interpreter, jit
        except ImportError:
            return
        for owner in (jit.JITFunction, interpreter.InterpretedFunction):
            original = owner.run

            def run(kernel, *args, _original=original, **kwargs):
                if kwargs.get("warmup", False) or self._inside_kernel:
                    return _original(kernel, *args, **kwargs)
                self.triton_launches += 1
                self._inside_kernel = True
                try:
                    return _original(kernel, *args, **kwargs)
                finally:
                    self._inside_kernel = False

            self._restore.append((owner, "run", original))
            owner.run = run
