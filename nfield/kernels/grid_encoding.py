"""Triton kernels of the multiresolution grid encoding (`nfield.encodings.grid`), with every derivative.

The geometry and the table layout are tiny-cuda-nn's, documented in `nfield.encodings.grid`; the
kernels compute exactly what its PyTorch reference computes, in float32 whatever the table's
dtype (float32 or float16). With y = enc(x, table) (N, L F) and u = clamp((x + 1) / 2, 0, 1):

- `_encode_kernel`: y. One program per (block of points, level); each gathers the 2^d corner rows
  as (BLOCK, F) tiles.
- `_table_grad_kernel`: dL/dtable = sum over points and corners of weight * dL/dy, scattered with
  float32 atomic adds.
- `_x_grad_kernel`: dL/dx_i = 1/2 [0 <= u_i <= 1] sum_l scale_l sum_corners s_i W_{-i} <table row, dL/dy_l>,
  with s_i = +-1 the corner's side along axis i and W_{-i} the product of the other axes'
  weights. Levels are looped inside the program, so dx needs no atomics.
- `_x_grad_backward_kernel`: the backward of that x-gradient for a cotangent h (N, d) (what an
  eikonal loss needs): its derivative w.r.t. the table (atomics), w.r.t. dL/dy, and w.r.t. x (the
  mixed second derivatives scale_l^2 s_i s_j W_{-i,-j}; linear interpolation has no pure ones).

`grid_encode` wraps them in autograd functions, so first and second derivatives w.r.t. x and the
table come from the kernels. Index arithmetic is int64 throughout (N L F may exceed 2^31).

Runs on CUDA tensors; with ``TRITON_INTERPRET=1`` set before import, on CPU tensors too (slowly),
which is how the CPU tests check it against the PyTorch reference.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from nfield.kernels import device_guard

_BLOCK = 128  # points per program
_META_COLUMNS = 4  # resolution, offset, size, hashed


@triton.jit
def _load_unit(x_ptr, rows, valid, stride_n, stride_d, axis: tl.constexpr):
    """u = clamp((x + 1) / 2, 0, 1) of one axis (BLOCK,), and whether the clamp passes gradients."""
    v = (tl.load(x_ptr + rows * stride_n + axis * stride_d, mask=valid, other=0.0).to(tl.float32) + 1.0) * 0.5
    inside = (v >= 0.0) & (v <= 1.0)
    return tl.minimum(tl.maximum(v, 0.0), 1.0), inside


@triton.jit
def _level_meta(meta_ptr, scales_ptr, level):
    """scale (float32), resolution, first row, rows and hashed flag (int64) of a level."""
    scale = tl.load(scales_ptr + level)
    resolution = tl.load(meta_ptr + level * 4 + 0)
    offset = tl.load(meta_ptr + level * 4 + 1)
    size = tl.load(meta_ptr + level * 4 + 2)
    hashed = tl.load(meta_ptr + level * 4 + 3)
    return scale, resolution, offset, size, hashed


@triton.jit
def _split(u, scale):
    """Cell (int64) and offset in the cell (float32) of p = u * scale + 0.5."""
    p = u * scale + 0.5
    cell = tl.floor(p)
    return cell.to(tl.int64), p - cell


@triton.jit
def _corner_row(c0, c1, c2, resolution, offset, size, hashed, DIM: tl.constexpr):
    """Table rows (BLOCK,) int64 of the vertices (c0, c1, c2) (c2 unused in 2-D)."""
    if DIM == 2:
        dense = c0 + c1 * resolution
        code = c0 ^ (c1 * 2654435761)
    else:
        dense = c0 + (c1 + c2 * resolution) * resolution
        code = c0 ^ (c1 * 2654435761) ^ (c2 * 805459861)
    return offset + tl.where(hashed != 0, code & (size - 1), dense % size)


@triton.jit
def _side(bit: tl.constexpr, frac):
    """The weight of a corner's side along one axis: frac for the upper vertex, 1 - frac for the lower."""
    if bit == 1:
        w = frac
    else:
        w = 1.0 - frac
    return w


@triton.jit
def _encode_kernel(
    x_ptr,
    stride_xn,
    stride_xd,
    table_ptr,
    meta_ptr,
    scales_ptr,
    out_ptr,
    n_points,
    n_levels,
    DIM: tl.constexpr,
    F: tl.constexpr,
    BLOCK: tl.constexpr,
):
    level = tl.program_id(1)
    rows = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = rows < n_points
    feats = tl.arange(0, F)
    scale, resolution, offset, size, hashed = _level_meta(meta_ptr, scales_ptr, level)
    u0, _ = _load_unit(x_ptr, rows, valid, stride_xn, stride_xd, 0)
    u1, _ = _load_unit(x_ptr, rows, valid, stride_xn, stride_xd, 1)
    c0, f0 = _split(u0, scale)
    c1, f1 = _split(u1, scale)
    if DIM == 3:
        u2, _ = _load_unit(x_ptr, rows, valid, stride_xn, stride_xd, 2)
        c2, f2 = _split(u2, scale)
    else:
        c2 = c0
        f2 = f0
    acc = tl.zeros((BLOCK, F), tl.float32)
    for corner in tl.static_range(2**DIM):
        b0 = corner & 1
        b1 = (corner >> 1) & 1
        b2 = (corner >> 2) & 1
        weight = _side(b0, f0) * _side(b1, f1)
        if DIM == 3:
            weight = weight * _side(b2, f2)
        row = _corner_row(c0 + b0, c1 + b1, c2 + b2, resolution, offset, size, hashed, DIM)
        value = tl.load(table_ptr + row[:, None] * F + feats[None, :], mask=valid[:, None], other=0.0).to(tl.float32)
        acc += weight[:, None] * value
    width = n_levels * F
    tl.store(out_ptr + rows[:, None] * width + level * F + feats[None, :], acc, mask=valid[:, None])


@triton.jit
def _table_grad_kernel(
    x_ptr,
    stride_xn,
    stride_xd,
    grad_ptr,
    stride_gn,
    stride_gc,
    meta_ptr,
    scales_ptr,
    table_grad_ptr,
    n_points,
    DIM: tl.constexpr,
    F: tl.constexpr,
    BLOCK: tl.constexpr,
):
    level = tl.program_id(1)
    rows = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = rows < n_points
    feats = tl.arange(0, F)
    scale, resolution, offset, size, hashed = _level_meta(meta_ptr, scales_ptr, level)
    u0, _ = _load_unit(x_ptr, rows, valid, stride_xn, stride_xd, 0)
    u1, _ = _load_unit(x_ptr, rows, valid, stride_xn, stride_xd, 1)
    c0, f0 = _split(u0, scale)
    c1, f1 = _split(u1, scale)
    if DIM == 3:
        u2, _ = _load_unit(x_ptr, rows, valid, stride_xn, stride_xd, 2)
        c2, f2 = _split(u2, scale)
    else:
        c2 = c0
        f2 = f0
    columns = level * F + feats
    grad = tl.load(grad_ptr + rows[:, None] * stride_gn + columns[None, :] * stride_gc, mask=valid[:, None], other=0.0)
    grad = grad.to(tl.float32)
    for corner in tl.static_range(2**DIM):
        b0 = corner & 1
        b1 = (corner >> 1) & 1
        b2 = (corner >> 2) & 1
        weight = _side(b0, f0) * _side(b1, f1)
        if DIM == 3:
            weight = weight * _side(b2, f2)
        row = _corner_row(c0 + b0, c1 + b1, c2 + b2, resolution, offset, size, hashed, DIM)
        tl.atomic_add(
            table_grad_ptr + row[:, None] * F + feats[None, :], weight[:, None] * grad, mask=valid[:, None], sem="relaxed"
        )


@triton.jit
def _x_grad_kernel(
    x_ptr,
    stride_xn,
    stride_xd,
    table_ptr,
    grad_ptr,
    stride_gn,
    stride_gc,
    meta_ptr,
    scales_ptr,
    x_grad_ptr,
    n_points,
    n_levels,
    DIM: tl.constexpr,
    F: tl.constexpr,
    BLOCK: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = rows < n_points
    feats = tl.arange(0, F)
    u0, in0 = _load_unit(x_ptr, rows, valid, stride_xn, stride_xd, 0)
    u1, in1 = _load_unit(x_ptr, rows, valid, stride_xn, stride_xd, 1)
    if DIM == 3:
        u2, in2 = _load_unit(x_ptr, rows, valid, stride_xn, stride_xd, 2)
    else:
        u2 = u0
        in2 = in0
    d0 = tl.zeros((BLOCK,), tl.float32)
    d1 = tl.zeros((BLOCK,), tl.float32)
    d2 = tl.zeros((BLOCK,), tl.float32)
    for level in range(n_levels):
        scale, resolution, offset, size, hashed = _level_meta(meta_ptr, scales_ptr, level)
        c0, f0 = _split(u0, scale)
        c1, f1 = _split(u1, scale)
        c2, f2 = _split(u2, scale)
        columns = level * F + feats
        grad = tl.load(grad_ptr + rows[:, None] * stride_gn + columns[None, :] * stride_gc, mask=valid[:, None], other=0.0)
        grad = grad.to(tl.float32)
        for corner in tl.static_range(2**DIM):
            b0 = corner & 1
            b1 = (corner >> 1) & 1
            b2 = (corner >> 2) & 1
            row = _corner_row(c0 + b0, c1 + b1, c2 + b2, resolution, offset, size, hashed, DIM)
            value = tl.load(table_ptr + row[:, None] * F + feats[None, :], mask=valid[:, None], other=0.0).to(tl.float32)
            projected = tl.sum(value * grad, axis=1) * scale
            w0 = _side(b0, f0)
            w1 = _side(b1, f1)
            if DIM == 3:
                w2 = _side(b2, f2)
                d0 += (2.0 * b0 - 1.0) * w1 * w2 * projected
                d1 += (2.0 * b1 - 1.0) * w0 * w2 * projected
                d2 += (2.0 * b2 - 1.0) * w0 * w1 * projected
            else:
                d0 += (2.0 * b0 - 1.0) * w1 * projected
                d1 += (2.0 * b1 - 1.0) * w0 * projected
    tl.store(x_grad_ptr + rows * DIM + 0, tl.where(in0, 0.5 * d0, 0.0), mask=valid)
    tl.store(x_grad_ptr + rows * DIM + 1, tl.where(in1, 0.5 * d1, 0.0), mask=valid)
    if DIM == 3:
        tl.store(x_grad_ptr + rows * DIM + 2, tl.where(in2, 0.5 * d2, 0.0), mask=valid)


@triton.jit
def _x_grad_backward_kernel(
    x_ptr,
    stride_xn,
    stride_xd,
    table_ptr,
    grad_ptr,
    stride_gn,
    stride_gc,
    cot_ptr,
    stride_hn,
    stride_hd,
    meta_ptr,
    scales_ptr,
    table_grad_ptr,
    grad_grad_ptr,
    x_grad_ptr,
    n_points,
    n_levels,
    DIM: tl.constexpr,
    F: tl.constexpr,
    BLOCK: tl.constexpr,
    NEED_TABLE: tl.constexpr,
    NEED_GRAD: tl.constexpr,
    NEED_X: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = rows < n_points
    feats = tl.arange(0, F)
    u0, in0 = _load_unit(x_ptr, rows, valid, stride_xn, stride_xd, 0)
    u1, in1 = _load_unit(x_ptr, rows, valid, stride_xn, stride_xd, 1)
    # the cotangent of dx, pulled back through du/dx = 1/2 [inside]
    h0 = tl.where(in0, 0.5 * tl.load(cot_ptr + rows * stride_hn, mask=valid, other=0.0).to(tl.float32), 0.0)
    h1 = tl.where(in1, 0.5 * tl.load(cot_ptr + rows * stride_hn + stride_hd, mask=valid, other=0.0).to(tl.float32), 0.0)
    if DIM == 3:
        u2, in2 = _load_unit(x_ptr, rows, valid, stride_xn, stride_xd, 2)
        h2 = tl.where(in2, 0.5 * tl.load(cot_ptr + rows * stride_hn + 2 * stride_hd, mask=valid, other=0.0).to(tl.float32), 0.0)
    else:
        u2 = u0
        in2 = in0
        h2 = h0
    e0 = tl.zeros((BLOCK,), tl.float32)
    e1 = tl.zeros((BLOCK,), tl.float32)
    e2 = tl.zeros((BLOCK,), tl.float32)
    for level in range(n_levels):
        scale, resolution, offset, size, hashed = _level_meta(meta_ptr, scales_ptr, level)
        c0, f0 = _split(u0, scale)
        c1, f1 = _split(u1, scale)
        c2, f2 = _split(u2, scale)
        columns = level * F + feats
        grad = tl.load(grad_ptr + rows[:, None] * stride_gn + columns[None, :] * stride_gc, mask=valid[:, None], other=0.0)
        grad = grad.to(tl.float32)
        grad_grad = tl.zeros((BLOCK, F), tl.float32)
        for corner in tl.static_range(2**DIM):
            b0 = corner & 1
            b1 = (corner >> 1) & 1
            b2 = (corner >> 2) & 1
            s0 = 2.0 * b0 - 1.0
            s1 = 2.0 * b1 - 1.0
            s2 = 2.0 * b2 - 1.0
            w0 = _side(b0, f0)
            w1 = _side(b1, f1)
            row = _corner_row(c0 + b0, c1 + b1, c2 + b2, resolution, offset, size, hashed, DIM)
            if DIM == 3:
                w2 = _side(b2, f2)
                # d(dx . h)/d(row value): scale sum_i h_i s_i W_{-i}
                along = scale * (h0 * s0 * w1 * w2 + h1 * s1 * w0 * w2 + h2 * s2 * w0 * w1)
            else:
                along = scale * (h0 * s0 * w1 + h1 * s1 * w0)
            if NEED_TABLE:
                tl.atomic_add(
                    table_grad_ptr + row[:, None] * F + feats[None, :], along[:, None] * grad, mask=valid[:, None], sem="relaxed"
                )
            if NEED_GRAD or NEED_X:
                value = tl.load(table_ptr + row[:, None] * F + feats[None, :], mask=valid[:, None], other=0.0).to(tl.float32)
                if NEED_GRAD:
                    grad_grad += along[:, None] * value
                if NEED_X:
                    projected = tl.sum(value * grad, axis=1) * scale * scale
                    # mixed second derivatives: sum_{i != j} h_i s_i s_j W_{-i,-j}
                    if DIM == 3:
                        e0 += projected * s0 * (h1 * s1 * w2 + h2 * s2 * w1)
                        e1 += projected * s1 * (h0 * s0 * w2 + h2 * s2 * w0)
                        e2 += projected * s2 * (h0 * s0 * w1 + h1 * s1 * w0)
                    else:
                        e0 += projected * s0 * h1 * s1
                        e1 += projected * s1 * h0 * s0
        if NEED_GRAD:
            width = n_levels * F
            tl.store(grad_grad_ptr + rows[:, None] * width + columns[None, :], grad_grad, mask=valid[:, None])
    if NEED_X:
        tl.store(x_grad_ptr + rows * DIM + 0, tl.where(in0, 0.5 * e0, 0.0), mask=valid)
        tl.store(x_grad_ptr + rows * DIM + 1, tl.where(in1, 0.5 * e1, 0.0), mask=valid)
        if DIM == 3:
            tl.store(x_grad_ptr + rows * DIM + 2, tl.where(in2, 0.5 * e2, 0.0), mask=valid)


class GridGeometry:
    """The levels of a grid as the device tensors the kernels read (built once per device)."""

    def __init__(self, levels: tuple, device: torch.device):
        self.n_levels = len(levels)
        meta = [[lv.resolution, lv.offset, lv.size, int(lv.hashed)] for lv in levels]
        self.meta = torch.tensor(meta, dtype=torch.int64, device=device)
        self.scales = torch.tensor([lv.scale for lv in levels], dtype=torch.float32, device=device)


_GEOMETRY_CACHE: dict[tuple, GridGeometry] = {}


def _geometry(levels: tuple, device: torch.device) -> GridGeometry:
    key = (levels, str(device))
    if key not in _GEOMETRY_CACHE:
        _GEOMETRY_CACHE[key] = GridGeometry(levels, device)
    return _GEOMETRY_CACHE[key]


def encode_forward(x: torch.Tensor, table: torch.Tensor, levels: tuple) -> torch.Tensor:
    """y (N, L F) float32 of x (N, d) float32 and table (rows, F) float32/float16 (no autograd)."""
    n, dim = x.shape
    features = table.shape[1]
    out = torch.empty(n, len(levels) * features, dtype=torch.float32, device=x.device)
    if n:
        geometry = _geometry(levels, x.device)
        with device_guard(x):
            _encode_kernel[(triton.cdiv(n, _BLOCK), len(levels))](
                x, x.stride(0), x.stride(1), table.contiguous(), geometry.meta, geometry.scales, out, n, len(levels),
                DIM=dim, F=features, BLOCK=_BLOCK,
            )  # fmt: skip
    return out


def encode_table_grad(x: torch.Tensor, grad: torch.Tensor, levels: tuple, table_shape: torch.Size) -> torch.Tensor:
    """dL/dtable (rows, F) float32 for dL/dy `grad` (N, L F)."""
    n, dim = x.shape
    table_grad = torch.zeros(table_shape, dtype=torch.float32, device=x.device)
    if n:
        geometry = _geometry(levels, x.device)
        with device_guard(x):
            _table_grad_kernel[(triton.cdiv(n, _BLOCK), len(levels))](
                x, x.stride(0), x.stride(1), grad, grad.stride(0), grad.stride(1), geometry.meta, geometry.scales,
                table_grad, n, DIM=dim, F=table_shape[1], BLOCK=_BLOCK,
            )  # fmt: skip
    return table_grad


def encode_x_grad(x: torch.Tensor, table: torch.Tensor, grad: torch.Tensor, levels: tuple) -> torch.Tensor:
    """dL/dx (N, d) float32 for dL/dy `grad` (N, L F)."""
    n, dim = x.shape
    x_grad = torch.empty(n, dim, dtype=torch.float32, device=x.device)
    if n:
        geometry = _geometry(levels, x.device)
        with device_guard(x):
            _x_grad_kernel[(triton.cdiv(n, _BLOCK),)](
                x, x.stride(0), x.stride(1), table.contiguous(), grad, grad.stride(0), grad.stride(1), geometry.meta,
                geometry.scales, x_grad, n, len(levels), DIM=dim, F=table.shape[1], BLOCK=_BLOCK,
            )  # fmt: skip
    return x_grad


def encode_x_grad_backward(
    x: torch.Tensor,
    table: torch.Tensor,
    grad: torch.Tensor,
    cotangent: torch.Tensor,
    levels: tuple,
    needs: tuple[bool, bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """The backward of `encode_x_grad` for the cotangent (N, d) of its output.

    Returns the derivatives of <dx, cotangent> w.r.t. the table (rows, F), dL/dy (N, L F) and x
    (N, d), each float32, or None where `needs` (table, grad, x) is False.
    """
    n, dim = x.shape
    need_table, need_grad, need_x = needs
    table_grad = torch.zeros(table.shape, dtype=torch.float32, device=x.device) if need_table else None
    grad_grad = torch.empty(n, grad.shape[1], dtype=torch.float32, device=x.device) if need_grad else None
    x_grad = torch.empty(n, dim, dtype=torch.float32, device=x.device) if need_x else None
    if n and any(needs):
        geometry = _geometry(levels, x.device)
        dummy = x.new_empty(1, dtype=torch.float32)
        with device_guard(x):
            _x_grad_backward_kernel[(triton.cdiv(n, _BLOCK),)](
                x, x.stride(0), x.stride(1), table.contiguous(), grad, grad.stride(0), grad.stride(1),
                cotangent, cotangent.stride(0), cotangent.stride(1), geometry.meta, geometry.scales,
                table_grad if need_table else dummy, grad_grad if need_grad else dummy, x_grad if need_x else dummy,
                n, len(levels), DIM=dim, F=table.shape[1], BLOCK=_BLOCK,
                NEED_TABLE=need_table, NEED_GRAD=need_grad, NEED_X=need_x,
            )  # fmt: skip
    return table_grad, grad_grad, x_grad


class _GridEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, table: torch.Tensor, levels: tuple) -> torch.Tensor:
        ctx.save_for_backward(x, table)
        ctx.levels = levels
        return encode_forward(x, table, levels)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        x, table = ctx.saved_tensors
        need_x, need_table = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        x_grad, table_grad = _GridEncodeBackward.apply(x, table, grad, ctx.levels, need_x, need_table)
        return x_grad, table_grad, None


class _GridEncodeBackward(torch.autograd.Function):
    """(x, table, dL/dy) -> (dL/dx, dL/dtable), itself differentiable once (for eikonal losses)."""

    @staticmethod
    def forward(ctx: Any, x, table, grad, levels, need_x: bool, need_table: bool):
        ctx.save_for_backward(x, table, grad)
        ctx.levels = levels
        x_grad = encode_x_grad(x, table, grad, levels).to(x.dtype) if need_x else None
        table_grad = encode_table_grad(x, grad, levels, table.shape).to(table.dtype) if need_table else None
        return x_grad, table_grad

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, x_grad_cotangent, table_grad_cotangent):
        x, table, grad = ctx.saved_tensors
        need_x, need_table, need_grad = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        d_x = d_table = d_grad = None
        if x_grad_cotangent is not None:
            d_table, d_grad, d_x = encode_x_grad_backward(
                x, table, grad, x_grad_cotangent, ctx.levels, (need_table, need_grad, need_x)
            )
        if table_grad_cotangent is not None:
            # dL/dtable is linear in dL/dy with the same weights as the forward: its cotangent
            # pulls back to dL/dy through the forward kernel, and to x through the x-gradient kernel
            cotangent_table = table_grad_cotangent.float()
            if need_grad:
                pulled = encode_forward(x, cotangent_table, ctx.levels)
                d_grad = pulled if d_grad is None else d_grad + pulled
            if need_x:
                pulled = encode_x_grad(x, cotangent_table, grad, ctx.levels)
                d_x = pulled if d_x is None else d_x + pulled
        return (
            None if d_x is None else d_x.to(x.dtype),
            None if d_table is None else d_table.to(table.dtype),
            None if d_grad is None else d_grad.to(grad.dtype),
            None,
            None,
            None,
        )


def grid_encode(x: torch.Tensor, table: torch.Tensor, levels: tuple) -> torch.Tensor:
    """The grid encoding through the Triton kernels, differentiable twice w.r.t. x and the table.

    Args:
        x: (N, d) float32 points in [-1, 1] (clamped to the box), any strides.
        table: (rows, F) float32 or float16 table, F in {1, 2, 4, 8}.
        levels: the layout from `nfield.encodings.grid.grid_levels`.

    Returns:
        (N, L F) float32 level-major features.
    """
    return _GridEncode.apply(x, table, levels)
