"""Which implementation runs: one public component, several backends, one rule for choosing.

Every component with a fast path (`HashGrid`, `DenseGrid`, `MLP`, packed compositing, occupancy
ray marching) takes a ``backend`` setting:

- ``auto`` (the default): the Triton kernel when the tensors are on CUDA and Triton is installed,
  else the PyTorch reference. Components whose kernel has not been measured faster than PyTorch
  (the fused MLP) stay on PyTorch under ``auto``.
- ``torch``: the PyTorch reference, on any device.
- ``triton``: the Triton kernel; an input that is not on CUDA is a one-line `NfieldError`
  (``TRITON_INTERPRET=1`` runs the kernels on the CPU, slowly, which is how they are tested).
- ``tcnn``: tiny-cuda-nn, when it is installed (it is not on PyPI; see `nfield.backends.tcnn`).

Setting the environment variable ``NFIELD_BACKEND=torch`` makes ``auto`` mean ``torch``
everywhere, a switch for ruling the kernels out without touching a config.

Components remember which backend ran last (`backends_in_use`), which the trainer writes to the
run log and ``nfield info`` prints.

Example::

    >>> import torch
    >>> choose_backend("HashGrid", "auto", torch.device("cpu"), ("torch", "triton"))
    'torch'
"""

from __future__ import annotations

import importlib.util
import os
from typing import Iterable

import torch
from torch import nn

from nfield.errors import NfieldError
from nfield.kernels import triton_available

BACKENDS = ("auto", "torch", "triton", "tcnn")
"""The names a ``backend`` setting accepts."""

_IN_USE: dict[str, str] = {}  # component label -> the backend that ran its last call


def check_backend(owner: str, name: str, supported: Iterable[str]) -> None:
    """Raise `NfieldError` unless `name` is ``auto`` or one of the `supported` backends of `owner`."""
    supported = tuple(supported)
    if name != "auto" and name not in supported:
        known = ", ".join(("auto", *supported))
        raise NfieldError(f"{owner}: unknown or unsupported backend {name!r}; choose one of {known}")


def tcnn_installed() -> bool:
    """True when the ``tinycudann`` package can be imported (it is never required)."""
    return importlib.util.find_spec("tinycudann") is not None


def choose_backend(owner: str, requested: str, device: torch.device, supported: Iterable[str], auto_triton: bool = True) -> str:
    """The backend that runs a call of `owner` on `device`.

    Args:
        owner: the component's name, for messages ("HashGrid").
        requested: its ``backend`` setting.
        device: where the call's tensors are.
        supported: the backends the component has, besides ``auto``.
        auto_triton: whether ``auto`` picks the Triton kernel where it can run (False for kernels
            not yet measured faster than PyTorch).

    Returns:
        "torch", "triton" or "tcnn".

    Raises:
        NfieldError: a forced backend that cannot run here, in one line saying why.
    """
    supported = tuple(supported)
    check_backend(owner, requested, supported)
    if requested == "auto":
        usable = auto_triton and "triton" in supported and os.environ.get("NFIELD_BACKEND", "auto") != "torch"
        return "triton" if usable and device.type == "cuda" and triton_available(device) else "torch"
    if requested == "triton" and not triton_available(device):
        if importlib.util.find_spec("triton") is None:
            raise NfieldError(f"{owner}: backend 'triton' needs the triton package (pip install triton); use backend 'auto'")
        raise NfieldError(f"{owner}: backend 'triton' runs on CUDA tensors, got {device}; use backend 'auto' or 'torch'")
    if requested == "tcnn":
        if not tcnn_installed():
            raise NfieldError(
                f"{owner}: backend 'tcnn' needs tiny-cuda-nn, which is not installed (it is not on PyPI: "
                "pip install git+https://github.com/NVlabs/tiny-cuda-nn/#subdirectory=bindings/torch); use backend 'auto'"
            )
        if device.type != "cuda":
            raise NfieldError(f"{owner}: backend 'tcnn' runs on CUDA tensors, got {device}; use backend 'auto' or 'torch'")
    return requested


def record_backend(label: str, backend: str) -> None:
    """Note that `backend` ran the last call of the component `label` (for logs and ``nfield info``)."""
    _IN_USE[label] = backend


def reset_backends() -> None:
    """Forget what ran so far (the trainer does this before the step it reports)."""
    _IN_USE.clear()


def backends_in_use() -> dict[str, str]:
    """Component label -> the backend that ran its last call in this process."""
    return dict(_IN_USE)


def set_backend(model: nn.Module, name: str) -> dict[str, bool]:
    """Ask every component of `model` that has a backend setting to use `name`.

    Returns:
        module path -> whether the component took it (a network built on PyTorch cannot move to
        tiny-cuda-nn, whose networks have no biases, and keeps its own setting).

    Raises:
        NfieldError: `name` is not a backend.
    """
    if name not in BACKENDS:
        raise NfieldError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return {
        path or type(module).__name__: bool(module.set_backend(name))
        for path, module in model.named_modules()
        if callable(getattr(module, "set_backend", None))
    }
