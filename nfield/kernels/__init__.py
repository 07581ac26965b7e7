"""Triton kernels for CUDA, each with a PyTorch reference elsewhere in the package that it is
tested against. `triton_available()` says whether they can run here."""

from __future__ import annotations

import contextlib
import os

import torch


def triton_available(device: torch.device | str) -> bool:
    """True when Triton is installed and can run on `device` (CUDA, or any device under the
    TRITON_INTERPRET=1 interpreter)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.device(device).type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def padded_width(n: int) -> int:
    """The next power of two >= max(n, 16): a width ``tl.dot`` takes (its dimensions are at least 16)."""
    return max(16, 1 << (max(n, 1) - 1).bit_length())


def tensor_versions(tensors) -> tuple:
    """What a packed copy of `tensors` depends on: each one's storage, shape and autograd version
    counter, which every in-place change (an optimiser step, ``load_state_dict``, ``copy_``) advances."""
    return tuple((t.data_ptr(), t._version, t.dtype, tuple(t.shape)) for t in tensors)


def module_version(module: torch.nn.Module) -> tuple:
    """`tensor_versions` of every parameter and buffer of `module`: what something computed from the
    whole module (a render of its field) depends on."""
    return tensor_versions(module.parameters()) + tensor_versions(module.buffers())


def device_guard(tensor: torch.Tensor) -> contextlib.AbstractContextManager:
    """``torch.cuda.device(tensor.device)`` for CUDA tensors (so a kernel launches on the tensor's
    GPU, not the current one), a no-op context otherwise."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()
