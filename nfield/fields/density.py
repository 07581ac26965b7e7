"""Density activations for radiance fields."""

from __future__ import annotations

from typing import Any

import torch

TRUNC_EXP_MAX = 15.0  # trunc_exp's backward uses exp(min(x, this)) <= 3.3e6 as the local gradient


class _TruncExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad_out * torch.exp(x.clamp(max=TRUNC_EXP_MAX))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    """exp(x) with the gradient of exp(min(x, 15)): instant-ngp's density activation.

    The forward pass is the plain exponential (inf above ~88 in float32); only the gradient is
    truncated, so one large log-density cannot blow up a training step.

    Args:
        x: any shape, log-density.

    Returns:
        exp(x), same shape.
    """
    return _TruncExp.apply(x)
