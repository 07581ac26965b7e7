"""Fused tiny MLP in Triton: all layers of a narrow network in one kernel per block of rows.

For `nfield.networks.MLP` layouts with n_hidden_layers >= 1 and widths 16 to 128 (tiny-cuda-nn's
FullyFusedMLP range): a program loads BLOCK_M rows of the input, multiplies them through every
layer with the weights held on chip (float16 operands, float32 accumulation, float16 activations
between layers, as tiny-cuda-nn does) and writes the output, so the hidden activations never
round-trip through memory in inference. Widths that are not powers of two are zero-padded to the
next one (padded units carry zero weights in and out, so they change nothing).

Training saves the float16 activations of each hidden layer. The backward kernel walks the layers
in reverse per block of rows, giving dL/dz of every layer (z the pre-activation, from the saved
outputs: relu' = [h > 0], sigmoid' = h (1 - h), tanh' = 1 - h^2, softplus' = 1 - exp(-h)) and
dL/dx; the weight gradients, which sum over all rows, are then one matrix product per layer.

Activations: relu, leaky_relu, none, sigmoid, tanh, softplus (the derivatives above need only the
activation's output). Runs on CUDA tensors; with ``TRITON_INTERPRET=1`` set before import, on CPU
tensors too (slowly), which is how the CPU tests check it against the PyTorch reference.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from nfield.kernels import device_guard

FUSED_ACTIVATIONS = {"none": 0, "relu": 1, "leakyrelu": 2, "sigmoid": 3, "tanh": 4, "softplus": 5}
"""Canonical activation name (lower case, no underscores) -> the kernels' code."""
MAX_WIDTH = 128
_BLOCK_M = 64


@triton.jit
def _activate(z, ACT: tl.constexpr):
    if ACT == 1:
        h = tl.maximum(z, 0.0)
    elif ACT == 2:
        h = tl.where(z > 0, z, 0.01 * z)
    elif ACT == 3:
        h = 1.0 / (1.0 + tl.exp(-z))
    elif ACT == 4:
        e = tl.exp(-2.0 * tl.abs(z))
        t = (1.0 - e) / (1.0 + e)
        h = tl.where(z < 0, -t, t)
    elif ACT == 5:
        h = tl.maximum(z, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(z)))
    else:
        h = z
    return h


@triton.jit
def _activation_slope(h, ACT: tl.constexpr):
    """d activation / dz, from the activation's output h."""
    if ACT == 1:
        s = tl.where(h > 0, 1.0, 0.0)
    elif ACT == 2:
        s = tl.where(h > 0, 1.0, 0.01)
    elif ACT == 3:
        s = h * (1.0 - h)
    elif ACT == 4:
        s = 1.0 - h * h
    elif ACT == 5:
        s = 1.0 - tl.exp(-h)
    else:
        s = h * 0.0 + 1.0
    return s


@triton.jit
def _mlp_forward_kernel(
    x_ptr,
    stride_xn,
    stride_xk,
    w_in_ptr,
    b_in_ptr,
    w_hidden_ptr,
    b_hidden_ptr,
    w_out_ptr,
    b_out_ptr,
    out_ptr,
    saved_ptr,
    n_rows,
    in_dim,
    n_hidden_layers,
    K: tl.constexpr,
    H: tl.constexpr,
    O: tl.constexpr,
    ACT: tl.constexpr,
    OUT_ACT: tl.constexpr,
    SAVE: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    valid = rows < n_rows
    k = tl.arange(0, K)
    j = tl.arange(0, H)
    o = tl.arange(0, O)
    x = tl.load(
        x_ptr + rows[:, None] * stride_xn + k[None, :] * stride_xk, mask=valid[:, None] & (k[None, :] < in_dim), other=0.0
    )
    w = tl.load(w_in_ptr + k[:, None] * H + j[None, :])
    z = tl.dot(x.to(tl.float16), w) + tl.load(b_in_ptr + j)[None, :]
    h = _activate(z, ACT).to(tl.float16)
    if SAVE:
        tl.store(saved_ptr + rows[:, None] * H + j[None, :], h, mask=valid[:, None])
    # compiled loops need each carried variable to keep its shape: the (H, H) tiles get their own names
    for layer in range(n_hidden_layers - 1):
        w_hidden = tl.load(w_hidden_ptr + layer * H * H + j[:, None] * H + j[None, :])
        z = tl.dot(h, w_hidden) + tl.load(b_hidden_ptr + layer * H + j)[None, :]
        h = _activate(z, ACT).to(tl.float16)
        if SAVE:
            tl.store(saved_ptr + (layer + 1) * n_rows * H + rows[:, None] * H + j[None, :], h, mask=valid[:, None])
    w_out = tl.load(w_out_ptr + j[:, None] * O + o[None, :])
    y = _activate(tl.dot(h, w_out) + tl.load(b_out_ptr + o)[None, :], OUT_ACT)
    tl.store(out_ptr + rows[:, None] * O + o[None, :], y, mask=valid[:, None])


@triton.jit
def _mlp_backward_kernel(
    grad_ptr,
    stride_gn,
    stride_go,
    out_ptr,
    saved_ptr,
    w_in_ptr,
    w_hidden_ptr,
    w_out_ptr,
    grad_z_ptr,
    grad_z_out_ptr,
    grad_x_ptr,
    n_rows,
    in_dim,
    out_dim,
    n_hidden_layers,
    K: tl.constexpr,
    H: tl.constexpr,
    O: tl.constexpr,
    ACT: tl.constexpr,
    OUT_ACT: tl.constexpr,
    NEED_X: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    valid = rows < n_rows
    k = tl.arange(0, K)
    j = tl.arange(0, H)
    o = tl.arange(0, O)
    grad = tl.load(
        grad_ptr + rows[:, None] * stride_gn + o[None, :] * stride_go, mask=valid[:, None] & (o[None, :] < out_dim), other=0.0
    )
    y = tl.load(out_ptr + rows[:, None] * O + o[None, :], mask=valid[:, None], other=0.0)
    grad_z_out = (grad.to(tl.float32) * _activation_slope(y, OUT_ACT)).to(tl.float16)
    tl.store(grad_z_out_ptr + rows[:, None] * O + o[None, :], grad_z_out, mask=valid[:, None])
    w_out_t = tl.load(w_out_ptr + o[:, None] + j[None, :] * O)  # (O, H): the output layer's weight, transposed
    grad_h = tl.dot(grad_z_out, w_out_t)
    # compiled loops need each carried variable to keep its shape: the (H, H) tiles get their own names
    for step in range(n_hidden_layers - 1):
        layer = n_hidden_layers - 1 - step
        h = tl.load(saved_ptr + layer * n_rows * H + rows[:, None] * H + j[None, :], mask=valid[:, None], other=0.0)
        grad_z = (grad_h * _activation_slope(h.to(tl.float32), ACT)).to(tl.float16)
        tl.store(grad_z_ptr + layer * n_rows * H + rows[:, None] * H + j[None, :], grad_z, mask=valid[:, None])
        w_hidden_t = tl.load(w_hidden_ptr + (layer - 1) * H * H + j[:, None] + j[None, :] * H)
        grad_h = tl.dot(grad_z, w_hidden_t)
    h_in = tl.load(saved_ptr + rows[:, None] * H + j[None, :], mask=valid[:, None], other=0.0)
    grad_z_in = (grad_h * _activation_slope(h_in.to(tl.float32), ACT)).to(tl.float16)
    tl.store(grad_z_ptr + rows[:, None] * H + j[None, :], grad_z_in, mask=valid[:, None])
    if NEED_X:
        w_in_t = tl.load(w_in_ptr + j[:, None] + k[None, :] * H)  # (H, K)
        grad_x = tl.dot(grad_z_in, w_in_t)
        tl.store(grad_x_ptr + rows[:, None] * in_dim + k[None, :], grad_x, mask=valid[:, None] & (k[None, :] < in_dim))


def _padded(n: int) -> int:
    """The next power of two >= max(n, 16) (tl.dot needs dimensions of at least 16)."""
    return max(16, triton.next_power_of_2(n))


class PackedWeights:
    """An MLP's layers as the float16, zero-padded, (in, out)-major tiles the kernels read."""

    def __init__(self, weights: list[torch.Tensor], biases: list[torch.Tensor]):
        self.in_dim, self.hidden, self.out_dim = weights[0].shape[1], weights[0].shape[0], weights[-1].shape[0]
        self.K, self.H, self.O = _padded(self.in_dim), _padded(self.hidden), _padded(self.out_dim)
        self.n_hidden_layers = len(weights) - 1
        device = weights[0].device

        def tile(weight: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
            out = torch.zeros(rows, cols, dtype=torch.float16, device=device)
            out[: weight.shape[1], : weight.shape[0]] = weight.detach().t()
            return out

        def vector(bias: torch.Tensor, size: int) -> torch.Tensor:
            out = torch.zeros(size, dtype=torch.float32, device=device)
            out[: len(bias)] = bias.detach()
            return out

        self.w_in, self.b_in = tile(weights[0], self.K, self.H), vector(biases[0], self.H)
        hidden = [tile(w, self.H, self.H) for w in weights[1:-1]]
        self.w_hidden = torch.stack(hidden) if hidden else self.w_in.new_zeros(1, self.H, self.H)
        self.b_hidden = torch.stack([vector(b, self.H) for b in biases[1:-1]]) if hidden else self.b_in.new_zeros(1, self.H)
        self.w_out, self.b_out = tile(weights[-1], self.H, self.O), vector(biases[-1], self.O)


def _forward(x: torch.Tensor, packed: PackedWeights, act: int, out_act: int, save: bool):
    n = len(x)
    out = torch.empty(n, packed.O, dtype=torch.float32, device=x.device)
    saved = torch.empty(packed.n_hidden_layers if save else 1, n if save else 1, packed.H, dtype=torch.float16, device=x.device)
    if n:
        with device_guard(x):
            _mlp_forward_kernel[(triton.cdiv(n, _BLOCK_M),)](
                x, x.stride(0), x.stride(1), packed.w_in, packed.b_in, packed.w_hidden, packed.b_hidden, packed.w_out,
                packed.b_out, out, saved, n, packed.in_dim, packed.n_hidden_layers,
                K=packed.K, H=packed.H, O=packed.O, ACT=act, OUT_ACT=out_act, SAVE=save, BLOCK_M=_BLOCK_M,
            )  # fmt: skip
    return out, saved


class _FusedMLP(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, act: int, out_act: int, n_layers: int, *params: torch.Tensor):
        weights, biases = list(params[:n_layers]), list(params[n_layers:])
        packed = PackedWeights(weights, biases)
        out, saved = _forward(x, packed, act, out_act, save=True)
        ctx.packed, ctx.act, ctx.out_act, ctx.n_layers = packed, act, out_act, n_layers
        ctx.param_dtypes = [p.dtype for p in params]
        ctx.save_for_backward(x, out, saved)
        return out[:, : packed.out_dim]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        x, out, saved = ctx.saved_tensors
        packed, n = ctx.packed, len(x)
        need_x = ctx.needs_input_grad[0]
        grad_z = torch.empty(packed.n_hidden_layers, n, packed.H, dtype=torch.float16, device=x.device)
        grad_z_out = torch.empty(n, packed.O, dtype=torch.float16, device=x.device)
        grad_x = torch.empty(n, packed.in_dim, dtype=torch.float32, device=x.device) if need_x else grad_z_out
        if n:
            with device_guard(x):
                _mlp_backward_kernel[(triton.cdiv(n, _BLOCK_M),)](
                    grad, grad.stride(0), grad.stride(1), out, saved, packed.w_in, packed.w_hidden, packed.w_out,
                    grad_z, grad_z_out, grad_x, n, packed.in_dim, packed.out_dim, packed.n_hidden_layers,
                    K=packed.K, H=packed.H, O=packed.O, ACT=ctx.act, OUT_ACT=ctx.out_act, NEED_X=need_x, BLOCK_M=_BLOCK_M,
                )  # fmt: skip
        # weight gradients: one product per layer over all rows, float32 accumulation
        inputs = [x.to(torch.float16)] + [saved[layer] for layer in range(packed.n_hidden_layers)]
        grads_z = [grad_z[layer] for layer in range(packed.n_hidden_layers)] + [grad_z_out]
        widths = [packed.hidden] * packed.n_hidden_layers + [packed.out_dim]
        fan_ins = [packed.in_dim] + [packed.hidden] * packed.n_hidden_layers
        weight_grads, bias_grads = [], []
        for layer_input, layer_grad, width, fan_in in zip(inputs, grads_z, widths, fan_ins):
            product = torch.mm(layer_grad[:, :width].t(), layer_input[:, :fan_in]).float()
            weight_grads.append(product)
            bias_grads.append(layer_grad[:, :width].float().sum(0))
        dtypes = ctx.param_dtypes
        param_grads = [g.to(dtype) for g, dtype in zip(weight_grads + bias_grads, dtypes)]
        return (grad_x.to(x.dtype) if need_x else None), None, None, None, *param_grads


def fused_mlp(
    x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor], activation: str, output_activation: str
) -> torch.Tensor:
    """An MLP's forward through the fused kernel, differentiable w.r.t. x, the weights and biases.

    Args:
        x: (N, in_dim) input, any float dtype and strides (read as float16).
        weights: per layer (out, in) `nn.Linear` weights: in_dim -> hidden, hidden -> hidden
            (n_hidden_layers - 1 times), hidden -> out_dim; hidden <= 128.
        biases: per layer (out,) biases.
        activation: hidden activation, a key of `FUSED_ACTIVATIONS` (canonical spelling).
        output_activation: the output's.

    Returns:
        (N, out_dim) float32.
    """
    act, out_act = FUSED_ACTIVATIONS[activation], FUSED_ACTIVATIONS[output_activation]
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in [*weights, *biases])):
        return _FusedMLP.apply(x, act, out_act, len(weights), *weights, *biases)
    packed = PackedWeights(weights, biases)
    out, _ = _forward(x, packed, act, out_act, save=False)
    return out[:, : packed.out_dim]
