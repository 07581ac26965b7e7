"""Triton's interpreter without its repeated re-patching of the language on every device-function call.

The interpreter patches ``triton.language`` for each launch (and undoes it afterwards), and patches
it again at every call of a ``@triton.jit`` helper inside the kernel (``_side``, ``_corner_row``,
``tl.zeros`` ...) without ever undoing that: the same patches, applied hundreds of thousands of
times, took over half of an interpreted training run (231,000 helper calls, 134 of 264 s, in a
4-step ngp run). Inside `device_calls_patched_once()`, a helper's module is patched on its first
call in each launch only; what every call computes is unchanged (the patches are the same ones,
and the launch's own patching and restoring are untouched). Requires ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def device_calls_patched_once() -> Iterator[None]:
    """Within the block, patch the language for a helper's module once per launch, not once per call."""
    from triton.runtime import interpreter

    function_class, executor_class = interpreter.InterpretedFunction, interpreter.GridExecutor
    original_call, original_launch = function_class.__call__, executor_class.__call__
    patched: list[set[int]] = [set()]

    def launch(self, *args, **kwargs):
        patched.append(set())  # a fresh launch patches (and later restores) the language itself
        try:
            return original_launch(self, *args, **kwargs)
        finally:
            patched.pop()

    def call(self, *args, **kwargs):
        module = id(self.fn.__globals__)
        if module not in patched[-1]:
            interpreter._patch_lang(self.fn)
            patched[-1].add(module)
        try:
            return self.rewrite()(*args, **kwargs)
        except Exception as error:
            raise interpreter.InterpreterError(repr(error)) from error

    function_class.__call__, executor_class.__call__ = call, launch
    try:
        yield
    finally:
        function_class.__call__, executor_class.__call__ = original_call, original_launch
