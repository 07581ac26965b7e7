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

Details that keep it right at any size:

- offsets of a layer's saved rows (layer * N * H) are int64: past 2^31 (N = 2^24 rows at H = 64
  with 3 layers) int32 offsets wrap;
- weight gradients are accumulated and returned in float32 (a float16 product reaches inf for a sum
  loss from about 2^18 rows);
- a backward asked to build its own graph (``create_graph=True``, an eikonal loss through the
  network) runs through the PyTorch reference, so second derivatives are exact;
- the packed float16 tiles are rebuilt only when a parameter changes (`PackedWeightsCache`).

The launch configuration (rows per program, pipeline stages) is a `FusedMLPVariant`; which one runs
on a given GPU is settled by `nfield.kernels.mlp_variants`, which probes each in a child process
running this module: `check_variant` against the reference on `CHECK_SHAPES`, then `time_variant`:

    python -m nfield.kernels.tiny_mlp --variant mma --device cuda   # one JSON line: errors and timing
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

import torch
import triton
import triton.language as tl

from nfield.kernels import device_guard, padded_width, tensor_versions
from nfield.kernels.mlp_variants import FusedMLPVariant, variant_for, variant_named

FUSED_ACTIVATIONS = {"none": 0, "relu": 1, "leakyrelu": 2, "sigmoid": 3, "tanh": 4, "softplus": 5}
"""Canonical activation name (lower case, no underscores) -> the kernels' code."""
MAX_WIDTH = 128
#: (in_dim, n_neurons, n_hidden_layers, out_dim, activation, output_activation): the benchmark's network,
#: NGLOD's decoder and the ngp colour network
CHECK_SHAPES = ((32, 64, 2, 16, "relu", "none"), (35, 128, 1, 1, "relu", "none"), (31, 64, 2, 3, "relu", "sigmoid"))
CHECK_ROWS = (4096 + 3, 2**18 + 11)
TIMED_ROWS = 2**20
TOLERANCES = {
    "forward": 1e-3,
    "backward": 5e-3,
}  # relative, against the reference with the kernels' float16 roundings (slopes from rounded outputs)


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
    plane = tl.cast(n_rows, tl.int64) * H  # one layer of saved activations (int64: L N H may pass 2^31)
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
            tl.store(saved_ptr + (layer + 1) * plane + rows[:, None] * H + j[None, :], h, mask=valid[:, None])
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
    plane = tl.cast(n_rows, tl.int64) * H  # one layer of saved activations (int64: L N H may pass 2^31)
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
        h = tl.load(saved_ptr + layer * plane + rows[:, None] * H + j[None, :], mask=valid[:, None], other=0.0)
        grad_z = (grad_h * _activation_slope(h.to(tl.float32), ACT)).to(tl.float16)
        tl.store(grad_z_ptr + layer * plane + rows[:, None] * H + j[None, :], grad_z, mask=valid[:, None])
        w_hidden_t = tl.load(w_hidden_ptr + (layer - 1) * H * H + j[:, None] + j[None, :] * H)
        grad_h = tl.dot(grad_z, w_hidden_t)
    h_in = tl.load(saved_ptr + rows[:, None] * H + j[None, :], mask=valid[:, None], other=0.0)
    grad_z_in = (grad_h * _activation_slope(h_in.to(tl.float32), ACT)).to(tl.float16)
    tl.store(grad_z_ptr + rows[:, None] * H + j[None, :], grad_z_in, mask=valid[:, None])
    if NEED_X:
        w_in_t = tl.load(w_in_ptr + j[:, None] + k[None, :] * H)  # (H, K)
        grad_x = tl.dot(grad_z_in, w_in_t)
        tl.store(grad_x_ptr + rows[:, None] * in_dim + k[None, :], grad_x, mask=valid[:, None] & (k[None, :] < in_dim))


class PackedWeights:
    """An MLP's layers as the float16, zero-padded, (in, out)-major tiles the kernels read."""

    def __init__(self, weights: list[torch.Tensor], biases: list[torch.Tensor]):
        self.in_dim, self.hidden, self.out_dim = weights[0].shape[1], weights[0].shape[0], weights[-1].shape[0]
        self.K, self.H, self.O = padded_width(self.in_dim), padded_width(self.hidden), padded_width(self.out_dim)
        self.n_hidden_layers = len(weights) - 1

        def tiles(stacked: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
            """(L, out, in) weights -> (L, rows, cols) float16 (in, out)-major, zero-padded."""
            t = stacked.detach().transpose(1, 2).to(torch.float16)
            return torch.nn.functional.pad(t, (0, cols - t.shape[2], 0, rows - t.shape[1])).contiguous()

        def vectors(stacked: torch.Tensor, size: int) -> torch.Tensor:
            return torch.nn.functional.pad(stacked.detach().float(), (0, size - stacked.shape[1])).contiguous()

        self.w_in, self.b_in = tiles(weights[0][None], self.K, self.H)[0], vectors(biases[0][None], self.H)[0]
        if self.n_hidden_layers > 1:
            self.w_hidden = tiles(torch.stack(weights[1:-1]), self.H, self.H)
            self.b_hidden = vectors(torch.stack(biases[1:-1]), self.H)
        else:  # the kernels never read them; a valid pointer all the same
            self.w_hidden = self.w_in.new_zeros(1, self.H, self.H)
            self.b_hidden = self.b_in.new_zeros(1, self.H)
        self.w_out, self.b_out = tiles(weights[-1][None], self.H, self.O)[0], vectors(biases[-1][None], self.O)[0]


class PackedWeightsCache:
    """The last `PackedWeights` of one network, reused while none of its parameters changed.

    Parameters are recognised by storage address, shape and autograd version counter, which every
    in-place update (an optimiser step, ``load_state_dict``) advances. Weights computed on the fly
    (non-leaf tensors, such as FR-INR's Lambda @ B) are packed afresh on every call.
    """

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.packed: PackedWeights | None = None

    def get(self, weights: list[torch.Tensor], biases: list[torch.Tensor]) -> PackedWeights:
        params = [*weights, *biases]
        if not all(p.is_leaf for p in params):
            return PackedWeights(weights, biases)
        key = tensor_versions(params)
        if key != self.key or self.packed is None:
            self.key, self.packed = key, PackedWeights(weights, biases)
        return self.packed


def _launch_grid(n: int, variant: FusedMLPVariant) -> tuple[int]:
    return (triton.cdiv(n, variant.block_m),)


def _forward(x: torch.Tensor, packed: PackedWeights, act: int, out_act: int, save: bool, variant: FusedMLPVariant):
    n = len(x)
    out = torch.empty(n, packed.O, dtype=torch.float32, device=x.device)
    saved = torch.empty(packed.n_hidden_layers if save else 1, n if save else 1, packed.H, dtype=torch.float16, device=x.device)
    if n:
        with device_guard(x):
            _mlp_forward_kernel[_launch_grid(n, variant)](
                x, x.stride(0), x.stride(1), packed.w_in, packed.b_in, packed.w_hidden, packed.b_hidden, packed.w_out,
                packed.b_out, out, saved, n, packed.in_dim, packed.n_hidden_layers,
                K=packed.K, H=packed.H, O=packed.O, ACT=act, OUT_ACT=out_act, SAVE=save, BLOCK_M=variant.block_m,
                **variant.launch_options(),
            )  # fmt: skip
    return out, saved


def weight_gradient(grad_z: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """sum over rows of grad_z^T inputs, (out, in) float32, from float16 (N, out) and (N, in).

    Accumulated and returned in float32: a float16 result overflows (inf) once the row sum passes
    65504, which a sum loss reaches from about 2^18 rows. On CUDA the float16 operands go through
    the tensor cores with a float32 output (``out_dtype``, PyTorch 2.8 and later); elsewhere they are
    widened first.
    """
    if grad_z.is_cuda:
        try:
            return torch.mm(grad_z.t(), inputs, out_dtype=torch.float32)
        except TypeError:  # a PyTorch before 2.8
            pass
    return torch.mm(grad_z.t().float(), inputs.float())


_ACTIVATION_FUNCTIONS = {
    0: lambda z: z,
    1: torch.relu,
    2: lambda z: torch.nn.functional.leaky_relu(z, 0.01),
    3: torch.sigmoid,
    4: torch.tanh,
    5: torch.nn.functional.softplus,
}


class _RoundGradient(torch.autograd.Function):
    """Identity forward; the backward rounds the incoming gradient to float16 (as the kernels store dL/dz)."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor) -> torch.Tensor:
        return z.view_as(z)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.half().float()


def reference_mlp(
    x: torch.Tensor,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor],
    act: int,
    out_act: int,
    float16: bool = False,
) -> torch.Tensor:
    """The network the kernels compute, in PyTorch float32 (differentiable to any order): (N, out_dim).

    With `float16`, values are rounded to float16 where the kernels round them: the input, the
    weights and every hidden layer's output in the forward (their gradients pass the rounding
    unchanged), and every layer's pre-activation gradient dL/dz in the backward. That is the same
    function up to the order of float32 sums, which is what a kernel check compares against.
    Without it, a ReLU unit whose pre-activation is within float16 rounding of zero takes the other
    side now and then, and the gradients of a few hundred rows differ by a few percent from the
    float32 network's.
    """

    def rounded(t: torch.Tensor) -> torch.Tensor:
        return t + (t.half().float() - t).detach() if float16 else t

    h = rounded(x.float())
    for layer, (weight, bias) in enumerate(zip(weights, biases)):
        last = layer == len(weights) - 1
        z = torch.nn.functional.linear(h, rounded(weight.float()), bias.float())
        h = _ACTIVATION_FUNCTIONS[out_act if last else act](_RoundGradient.apply(z) if float16 else z)
        h = h if last else rounded(h)
    return h


class _FusedMLP(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, act: int, out_act: int, n_layers: int, packed: PackedWeights,
                variant: FusedMLPVariant, *params: torch.Tensor):  # fmt: skip
        out, saved = _forward(x, packed, act, out_act, True, variant)
        ctx.packed, ctx.act, ctx.out_act, ctx.n_layers, ctx.variant = packed, act, out_act, n_layers, variant
        ctx.param_dtypes = [p.dtype for p in params]
        ctx.save_for_backward(x, out, saved, *params)
        return out[:, : packed.out_dim]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        x, out, saved, *params = ctx.saved_tensors
        if torch.is_grad_enabled():
            return _FusedMLP._differentiable_backward(ctx, grad, x, params)
        packed, n, variant = ctx.packed, len(x), ctx.variant
        need_x = ctx.needs_input_grad[0]
        grad_z = torch.empty(packed.n_hidden_layers, n, packed.H, dtype=torch.float16, device=x.device)
        grad_z_out = torch.empty(n, packed.O, dtype=torch.float16, device=x.device)
        grad_x = torch.empty(n, packed.in_dim, dtype=torch.float32, device=x.device) if need_x else grad_z_out
        if n:
            with device_guard(x):
                _mlp_backward_kernel[_launch_grid(n, variant)](
                    grad, grad.stride(0), grad.stride(1), out, saved, packed.w_in, packed.w_hidden, packed.w_out,
                    grad_z, grad_z_out, grad_x, n, packed.in_dim, packed.out_dim, packed.n_hidden_layers,
                    K=packed.K, H=packed.H, O=packed.O, ACT=ctx.act, OUT_ACT=ctx.out_act, NEED_X=need_x,
                    BLOCK_M=variant.block_m, **variant.launch_options(),
                )  # fmt: skip
        # weight gradients: one product per layer over all rows, float32 accumulation and result
        inputs = [x.to(torch.float16)] + [saved[layer] for layer in range(packed.n_hidden_layers)]
        grads_z = [grad_z[layer] for layer in range(packed.n_hidden_layers)] + [grad_z_out]
        widths = [packed.hidden] * packed.n_hidden_layers + [packed.out_dim]
        fan_ins = [packed.in_dim] + [packed.hidden] * packed.n_hidden_layers
        weight_grads, bias_grads = [], []
        for layer_input, layer_grad, width, fan_in in zip(inputs, grads_z, widths, fan_ins):
            weight_grads.append(weight_gradient(layer_grad[:, :width], layer_input[:, :fan_in]))
            bias_grads.append(layer_grad[:, :width].sum(0, dtype=torch.float32))
        param_grads = [g.to(dtype) for g, dtype in zip(weight_grads + bias_grads, ctx.param_dtypes)]
        return (grad_x.to(x.dtype) if need_x else None), None, None, None, None, None, *param_grads

    @staticmethod
    def _differentiable_backward(ctx: Any, grad: torch.Tensor, x: torch.Tensor, params: list[torch.Tensor]):
        """The backward as a graph of PyTorch ops (for create_graph=True): through `reference_mlp`."""
        n_layers = ctx.n_layers
        wanted = [x, *params]
        needs = [ctx.needs_input_grad[0], *ctx.needs_input_grad[6:]]
        with torch.enable_grad():
            out = reference_mlp(x, params[:n_layers], params[n_layers:], ctx.act, ctx.out_act)
            chosen = [t for t, need in zip(wanted, needs) if need]
            found = iter(torch.autograd.grad(out, chosen, grad, create_graph=True, allow_unused=True))
        grads = [next(found) if need else None for need in needs]
        grad_x, param_grads = grads[0], grads[1:]
        param_grads = [None if g is None else g.to(dtype) for g, dtype in zip(param_grads, ctx.param_dtypes)]
        return (None if grad_x is None else grad_x.to(x.dtype)), None, None, None, None, None, *param_grads


def fused_mlp(
    x: torch.Tensor,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor],
    activation: str,
    output_activation: str,
    cache: PackedWeightsCache | None = None,
    variant: FusedMLPVariant | None = None,
) -> torch.Tensor:
    """An MLP's forward through the fused kernel, differentiable w.r.t. x, the weights and biases.

    First derivatives come from the backward kernel; a backward that builds its own graph (second
    derivatives, e.g. an eikonal loss) goes through the PyTorch reference.

    Args:
        x: (N, in_dim) input, any float dtype and strides (read as float16).
        weights: per layer (out, in) `nn.Linear` weights: in_dim -> hidden, hidden -> hidden
            (n_hidden_layers - 1 times), hidden -> out_dim; hidden <= 128.
        biases: per layer (out,) biases.
        activation: hidden activation, a key of `FUSED_ACTIVATIONS` (canonical spelling).
        output_activation: the output's.
        cache: where the network keeps its packed weights between calls (None: pack afresh).
        variant: the launch configuration (None: the one `nfield.kernels.mlp_variants` settled on
            for x's device).

    Returns:
        (N, out_dim) float32.
    """
    act, out_act = FUSED_ACTIVATIONS[activation], FUSED_ACTIVATIONS[output_activation]
    if variant is None:
        variant = variant_for(x.device)
    packed = cache.get(weights, biases) if cache is not None else PackedWeights(weights, biases)
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in [*weights, *biases])):
        return _FusedMLP.apply(x, act, out_act, len(weights), packed, variant, *weights, *biases)
    out, _ = _forward(x, packed, act, out_act, False, variant)
    return out[:, : packed.out_dim]


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double(), want.detach().double()
    if not torch.isfinite(got).all():
        return float("inf")
    return float((got - want).norm() / want.norm().clamp_min(1e-30))


def check_variant(variant: FusedMLPVariant, device: torch.device, rows: tuple[int, ...] = CHECK_ROWS) -> dict[str, float]:
    """Worst forward and backward relative errors of `variant` against `reference_mlp` (with the
    kernels' float16 roundings) on `CHECK_SHAPES` at each row count; AssertionError past `TOLERANCES`."""
    generator = torch.Generator().manual_seed(0)
    worst = {"forward": 0.0, "backward": 0.0}
    for in_dim, width, layers, out_dim, act, out_act in CHECK_SHAPES:
        fans = [in_dim] + [width] * layers
        outs = [width] * layers + [out_dim]
        weights = [(torch.randn(o, i, generator=generator) / i**0.5).to(device).requires_grad_() for i, o in zip(fans, outs)]
        biases = [(torch.randn(o, generator=generator) * 0.1).to(device).requires_grad_() for o in outs]
        for n in rows:
            x = torch.randn(n, in_dim, generator=generator).to(device).requires_grad_()
            cotangent = torch.randn(n, out_dim, generator=generator).to(device)
            code, out_code = FUSED_ACTIVATIONS[act], FUSED_ACTIVATIONS[out_act]
            want = reference_mlp(x, weights, biases, code, out_code, float16=True)
            got = fused_mlp(x, weights, biases, act, out_act, variant=variant)
            grads_want = torch.autograd.grad(want, [x, *weights, *biases], cotangent)
            grads_got = torch.autograd.grad(got, [x, *weights, *biases], cotangent)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            label = f"{variant.name} {in_dim}->{width}x{layers}->{out_dim} at {n} rows"
            error = _relative_error(got, want)
            assert error <= TOLERANCES["forward"], f"FAIL {label}: forward relative error {error:.3g}"
            worst["forward"] = max(worst["forward"], error)
            for index, (a, b) in enumerate(zip(grads_got, grads_want)):
                error = _relative_error(a, b)
                assert error <= TOLERANCES["backward"], f"FAIL {label}: gradient {index} relative error {error:.3g}"
                worst["backward"] = max(worst["backward"], error)
    return worst


def time_variant(variant: FusedMLPVariant, device: torch.device, n: int = TIMED_ROWS, repeats: int = 20) -> float:
    """Median milliseconds of forward + backward of the benchmark's 32 -> 64 x 2 -> 16 network at n rows."""
    in_dim, width, layers, out_dim, act, out_act = CHECK_SHAPES[0]
    fans, outs = [in_dim] + [width] * layers, [width] * layers + [out_dim]
    weights = [torch.nn.Parameter(torch.randn(o, i, device=device) / i**0.5) for i, o in zip(fans, outs)]
    biases = [torch.nn.Parameter(torch.zeros(o, device=device)) for o in outs]
    x = torch.randn(n, in_dim, device=device)
    cotangent = torch.randn(n, out_dim, device=device)
    cache = PackedWeightsCache()

    def step() -> None:
        fused_mlp(x, weights, biases, act, out_act, cache=cache, variant=variant).backward(cotangent)

    step()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    """One variant's checks (and timing on CUDA, unless ``--quick``) in this process, as the probe of
    `nfield.kernels.mlp_variants` runs it in a child: one JSON line on stdout, exit status 1 (the
    failed check on stderr) when a check fails."""
    parser = argparse.ArgumentParser(description="Check (and time) one launch configuration of the fused MLP.")
    parser.add_argument("--variant", required=True, help="the launch configuration's name")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="the smaller row count only, untimed")
    args = parser.parse_args(argv)
    variant = variant_named(args.variant)
    target = torch.device(args.device)
    quick = args.quick or target.type != "cuda"  # in Triton's interpreter: the smaller size only
    try:
        errors = check_variant(variant, target, rows=CHECK_ROWS[:1] if quick else CHECK_ROWS)
        report = {
            "variant": variant.name,
            "ok": True,
            "triton": triton.__version__,
            **{f"{k}_error": v for k, v in errors.items()},
        }
        if not quick:
            ms = time_variant(variant, target)
            report.update(ms_forward_backward=ms, rows_per_second=TIMED_ROWS / ms * 1e3)
    except AssertionError as error:
        print(str(error), file=sys.stderr)
        return 1
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
