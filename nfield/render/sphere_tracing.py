"""Sphere tracing of signed distance fields, their normals, and simple shading for previews.

`sphere_trace` finds where rays first cross the zero level set of an SDF (any callable mapping
(M, 3) points to (M,) signed distances, such as a neural field). Each ray is first clipped to an
axis-aligned bounding box; then, at every iteration, the SDF is evaluated at the rays still
marching, a ray whose |distance| < max(hit_eps, footprint * t) is a hit (no finer than a pixel's
footprint at its distance, when `footprint` is the camera's angle per pixel), and the others
advance by step_scale * distance (Hart 1996). An optional occupancy structure (`empty_space`, e.g.
a sparse octree as in NGLOD) lets rays jump over empty boxes without evaluating the SDF there.
The active set is compacted every `compact_every` iterations: every iteration on the CPU, where a
compaction costs only its own work; every 4 on CUDA, where each costs a host synchronisation, and
finished rays ride along (masked) in between.

`render_surface` ties a tracer to `nfield.render.cameras`: rays per pixel, trace, shading, with no
host synchronisation of its own. A tracer (`SurfaceTracer`) returns hits and normals, so a field
with a fused tracer of its own (NGLOD's, `nfield.fields.nglod_tracing`) plugs in; `render_sdf`
uses `sphere_trace` with normals by autograd (`sdf_normals`) or by tetrahedral differences
(`tetrahedral_normals`). All of it runs on the device the rays (or the pose) are on.

Example::

    >>> import torch
    >>> from nfield.render.cameras import PinholeCamera, look_at
    >>> sphere = lambda points: points.norm(dim=-1) - 0.5
    >>> image = render_sdf(sphere, PinholeCamera.from_fov(33, 33, 40.0), look_at((0.0, 0.0, 2.5)))
    >>> image["rgb"].shape, float(image["depth"][16, 16])  # the centre pixel
    (torch.Size([33, 33, 3]), 2.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from nfield.errors import NfieldError
from nfield.render.cameras import PinholeCamera, camera_rays
from nfield.render.rays import Bound, ray_box_intersection

SdfFn = Callable[[torch.Tensor], torch.Tensor]
"""(M, 3) points -> (M,) signed distances, negative inside (an (M, 1) output is accepted too)."""

EmptySpaceFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
"""(M, 3) points -> (lo (M, 3), hi (M, 3), empty (M,) bool): the largest empty axis-aligned box
holding each point, meaningful where `empty` is True."""

_JUMP_EPS = 1e-5  # how far past the exit of an empty box a ray lands, world units
PIXEL_FOOTPRINT = 0.25
"""Hits are never finer than this many pixels' footprint at their distance: a quarter pixel keeps
the hit IoU with exact thresholds above 0.99 at 480x270 (half a pixel dropped it to 0.989 at 640x360)."""
_TETRAHEDRON = ((1.0, -1.0, -1.0), (-1.0, -1.0, 1.0), (-1.0, 1.0, -1.0), (1.0, 1.0, 1.0))  # normals' sample directions

# Clay matcap, in view space (camera +x right, +y up, +z towards the viewer).
_CLAY_ALBEDO = (0.80, 0.71, 0.62)
_KEY_LIGHT = (-0.45, 0.6, 0.66)  # above-left of the camera, in front of the object (normalised below)
_AMBIENT, _DIFFUSE = 0.25, 0.65  # times the albedo
_RIM, _RIM_POWER = 0.15, 3.0  # soft light on silhouettes: _RIM * (1 - n_z)^_RIM_POWER
_SPECULAR, _SHININESS = 0.15, 32.0  # Blinn-Phong highlight of the key light

SHADINGS = ("normal", "matcap")


@dataclass(frozen=True)
class SphereTraceResult:
    """What `sphere_trace` found, per ray.

    t: (N,) distance along each (unit) ray from its origin: the hit for hits; for misses the
        last value marched to (past the end of the interval, or where the steps ran out), or
        max(near, box entry) / `near` for rays that were never marched.
    hit: (N,) bool, True where the ray reached |sdf| < max(hit_eps, footprint t) inside its interval.
    positions: (N, 3) origins + t * directions.
    n_steps: iterations of the marching loop that ran.
    n_evaluations: SDF evaluations in total (points, over all iterations; between compactions the
        finished rays riding along count too).
    evaluations: (N,) int32 SDF evaluations of each ray while it marched.
    """

    t: torch.Tensor
    hit: torch.Tensor
    positions: torch.Tensor
    n_steps: int
    n_evaluations: int
    evaluations: torch.Tensor


@dataclass(frozen=True)
class TracedSurface:
    """Where rays meet a surface, as a `SurfaceTracer` returns it.

    t: (N,) distance along each unit ray to its hit (meaningless for misses).
    hit: (N,) bool.
    normals: (N, 3) unit outward normals at the hits, zero at misses.
    evaluations: (N,) int32 SDF evaluations of each ray while tracing (normals not counted).
    """

    t: torch.Tensor
    hit: torch.Tensor
    normals: torch.Tensor
    evaluations: torch.Tensor


SurfaceTracer = Callable[[torch.Tensor, torch.Tensor, float, int], TracedSurface]
"""(origins (N, 3), unit directions (N, 3), footprint, width) -> `TracedSurface`. The rays are an
image's pixels in row-major order, `width` per row; `footprint` is the angle one pixel spans
(radians), so a hit threshold no finer than a pixel at distance t is footprint * t."""


def _distances(sdf_fn: SdfFn, points: torch.Tensor) -> torch.Tensor:
    """sdf_fn(points) as an (M,) tensor of the points' dtype, or NfieldError for a wrong shape."""
    distances = sdf_fn(points)
    if not isinstance(distances, torch.Tensor) or distances.numel() != len(points):
        shape = tuple(distances.shape) if isinstance(distances, torch.Tensor) else type(distances).__name__
        raise NfieldError(f"sdf_fn must return one distance per point, got {shape} for {len(points)} points")
    return distances.reshape(-1).to(points.dtype)


def _evaluate(sdf_fn: SdfFn, points: torch.Tensor, chunk: int) -> torch.Tensor:
    """sdf_fn at (M, 3) points, at most `chunk` per call and no call for M = 0: (M,) distances."""
    if len(points) == 0:
        return points.new_zeros(0)
    return torch.cat([_distances(sdf_fn, part) for part in points.split(chunk)])


def _empty_boxes(empty_space: EmptySpaceFn, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """empty_space(points) checked for shape: (lo (M, 3), hi (M, 3), empty (M,) bool)."""
    lo, hi, empty = empty_space(points)
    if lo.shape != points.shape or hi.shape != points.shape or empty.shape != points.shape[:1] or empty.dtype != torch.bool:
        raise NfieldError(
            f"empty_space must return lo (M, 3), hi (M, 3) and a bool empty (M,) for M = {len(points)} points, got "
            f"{tuple(lo.shape)}, {tuple(hi.shape)} and {empty.dtype} {tuple(empty.shape)}"
        )
    return lo, hi, empty


def default_compaction(device: torch.device) -> int:
    """Iterations between compactions of the active rays: 1 on the CPU (a compaction is only its own
    work, and saves evaluating finished rays), 4 elsewhere (each costs a host synchronisation)."""
    return 1 if torch.device(device).type == "cpu" else 4


@torch.no_grad()
def sphere_trace(
    sdf_fn: SdfFn,
    origins: torch.Tensor,
    directions: torch.Tensor,
    *,
    # the interval searched along each ray
    near: float = 0.0,
    far: float = float("inf"),
    bounds: tuple[Bound, Bound] = (-1.0, 1.0),
    # marching
    max_steps: int = 128,
    hit_eps: float = 1e-3,
    footprint: float = 0.0,
    step_scale: float = 1.0,
    # cost
    empty_space: EmptySpaceFn | None = None,
    chunk: int = 2**18,
    compact_every: int | None = None,
) -> SphereTraceResult:
    """First crossing of the SDF's zero level set along each ray, by sphere tracing.

    Each ray searches t in [max(near, entry), min(far, exit)], where entry and exit are where it
    meets the box `bounds`; rays that miss the box (or whose interval is empty) are misses and cost
    no evaluation. Every iteration, each still-active ray at point p = o + t d either

    - jumps, if `empty_space` says p is empty: t moves to the exit of p's empty box plus 1e-5,
      without evaluating the SDF; or
    - evaluates the SDF: |sdf(p)| < max(hit_eps, footprint t) is a hit at t, else
      t += step_scale * sdf(p).

    A ray whose t leaves its interval (or becomes NaN) is a miss, as is a ray still marching after
    `max_steps` iterations (jumps count as iterations). A ray starting inside the surface steps
    backwards out of its interval and misses. The SDF is called without autograd, at most `chunk`
    points at a time; `empty_space` is called once per iteration on all active points.

    Args:
        sdf_fn: (M, 3) points -> (M,) signed distances, world units, negative inside. Steps are
            safe when |sdf| never exceeds the true distance (an exact or conservative SDF);
            for a neural SDF that overshoots, use step_scale < 1.
        origins: (N, 3) ray origins.
        directions: (N, 3) unit ray directions (t is a distance only for unit directions).
        near, far: the search interval along every ray, world units.
        bounds: (lo, hi) corners of the box the scene lives in: floats (the cube [lo, hi]^3), (3,)
            or (N, 3) tensors.
        max_steps: the most iterations any ray takes.
        hit_eps: hit threshold on |sdf|, world units.
        footprint: radians per pixel of the camera the rays come from (0: none); the threshold at
            distance t is then never finer than footprint * t, the pixel's footprint there.
        step_scale: fraction of the distance a step advances, in (0, 2).
        empty_space: optional occupancy structure, (M, 3) points -> (lo (M, 3), hi (M, 3),
            empty (M,) bool) giving the largest empty axis-aligned box holding each point (meaningful
            where empty is True); a point must lie in its own box.
        chunk: the most points per SDF call.
        compact_every: iterations between compactions of the active rays (None:
            `default_compaction` for the rays' device). With 1, only the rays still marching are
            evaluated; with more, the rays of the last compaction are (finished ones masked), so
            an iteration needs no host synchronisation.

    Returns:
        A `SphereTraceResult` (t, hit, positions, evaluations per ray; n_steps, n_evaluations in total).

    Example::

        >>> o, d = torch.tensor([[0.0, 0.0, 3.0]]), torch.tensor([[0.0, 0.0, -1.0]])
        >>> result = sphere_trace(lambda p: p.norm(dim=-1) - 0.5, o, d)
        >>> result.t, result.hit, result.n_evaluations  # enters [-1, 1]^3 at t = 2, one step to t = 2.5
        (tensor([2.5000]), tensor([True]), 2)
    """
    if origins.dim() != 2 or origins.shape[1] != 3 or directions.shape != origins.shape:
        raise NfieldError(
            f"sphere_trace: origins and directions must both be (N, 3), got {tuple(origins.shape)} and {tuple(directions.shape)}"
        )
    if not (directions.norm(dim=-1) - 1.0).abs().le(1e-3).all():
        raise NfieldError("sphere_trace: directions must be unit vectors; divide them by directions.norm(dim=-1, keepdim=True)")
    if not (isinstance(max_steps, int) and max_steps >= 1):
        raise NfieldError(f"sphere_trace: max_steps must be a positive integer, got {max_steps!r}")
    if not hit_eps > 0:
        raise NfieldError(f"sphere_trace: hit_eps must be a positive distance, got {hit_eps!r}")
    if not footprint >= 0:
        raise NfieldError(f"sphere_trace: footprint must be an angle >= 0 (radians per pixel), got {footprint!r}")
    if not 0 < step_scale < 2:
        raise NfieldError(f"sphere_trace: step_scale must lie in (0, 2), got {step_scale!r}")
    if not (isinstance(chunk, int) and chunk >= 1):
        raise NfieldError(f"sphere_trace: chunk must be a positive integer, got {chunk!r}")
    compact_every = default_compaction(origins.device) if compact_every is None else compact_every
    if not (isinstance(compact_every, int) and compact_every >= 1):
        raise NfieldError(f"sphere_trace: compact_every must be a positive integer, got {compact_every!r}")
    if len(bounds) != 2:
        raise NfieldError(f"sphere_trace: bounds must be a pair (lo, hi) of box corners, got {len(bounds)} values")

    t_near, t_far, in_box = ray_box_intersection(origins, directions, *bounds)
    start, end = t_near.clamp_min(near), t_far.clamp_max(far)
    t = torch.where(in_box, start, torch.full_like(start, near))
    hit = torch.zeros_like(in_box)
    evaluations = torch.zeros(len(origins), dtype=torch.int32, device=origins.device)
    index = torch.nonzero(in_box & (start <= end)).squeeze(1)
    # the active rays, compacted every compact_every iterations
    o, d, t_active, lower, upper = origins[index], directions[index], t[index], start[index], end[index]
    n_steps = n_evaluations = 0
    while len(index) and n_steps < max_steps:
        running = torch.ones_like(index, dtype=torch.bool)  # still marching since the last compaction
        reached = torch.zeros_like(running)
        for _ in range(min(compact_every, max_steps - n_steps)):
            n_steps += 1
            points = torch.addcmul(o, t_active[:, None], d)
            threshold = torch.clamp_min(footprint * t_active, hit_eps) if footprint > 0 else hit_eps
            if compact_every == 1:  # evaluate exactly the rays marching here, by index
                marching = None  # all of them
                if empty_space is not None:
                    box_lo, box_hi, empty = _empty_boxes(empty_space, points)
                    jump, marching = torch.nonzero(empty).squeeze(1), torch.nonzero(~empty).squeeze(1)
                    _, exit_t, _ = ray_box_intersection(points[jump], d[jump], box_lo[jump], box_hi[jump])
                    t_active.index_add_(0, jump, exit_t.clamp_min(0.0) + _JUMP_EPS)
                    points = points[marching]
                distances = _evaluate(sdf_fn, points, chunk)
                if footprint > 0:
                    threshold = threshold if marching is None else threshold[marching]
                close = distances.abs() < threshold
                step = step_scale * torch.where(close, 0.0, distances)
                if marching is None:
                    t_active, reached = t_active + step, close
                    evaluations.index_add_(0, index, torch.ones_like(index, dtype=torch.int32))
                else:
                    t_active.index_add_(0, marching, step)
                    reached[marching] = close
                    evaluations.index_add_(0, index[marching], torch.ones_like(marching, dtype=torch.int32))
                n_evaluations += len(distances)
            else:  # every ray of the last compaction, finished ones masked: no host synchronisation
                marching = running
                step = torch.zeros_like(t_active)
                if empty_space is not None:
                    box_lo, box_hi, empty = _empty_boxes(empty_space, points)
                    _, exit_t, _ = ray_box_intersection(points, d, box_lo, box_hi)
                    step = torch.where(empty, exit_t.clamp_min(0.0) + _JUMP_EPS, step)
                    marching = running & ~empty
                distances = _evaluate(sdf_fn, points, chunk)
                close = marching & (distances.abs() < threshold)
                step = torch.where(marching & ~close, step_scale * distances, step)
                t_active = torch.where(running, t_active + step, t_active)
                reached = reached | close
                evaluations.index_add_(0, index, marching.to(torch.int32))
                n_evaluations += len(distances)
            running = running & ~reached & (t_active >= lower) & (t_active <= upper)
        done = ~running
        hit[index[reached]] = True
        t[index[done]] = t_active[done]
        index, o, d, t_active, lower, upper = (x[running] for x in (index, o, d, t_active, lower, upper))
    t[index] = t_active
    return SphereTraceResult(t, hit, torch.addcmul(origins, t[:, None], directions), n_steps, n_evaluations, evaluations)


def sdf_normals(sdf_fn: SdfFn, points: torch.Tensor, chunk: int = 2**16) -> torch.Tensor:
    """Unit surface normals: the normalised gradient of the SDF, by autograd.

    Autograd is switched on inside, so this works under `torch.no_grad()`; the SDF's own
    parameters get no gradient. Points where the gradient is zero or not finite get (0, 0, 0).

    Args:
        sdf_fn: (M, 3) points -> (M,) signed distances, differentiable w.r.t. the points.
        points: (N, 3) where to take the normals, usually on the surface.
        chunk: the most points per SDF call (each call keeps its autograd graph until its backward).

    Returns:
        (N, 3) unit normals (or zeros), detached, in the points' dtype.

    Example::

        >>> sdf_normals(lambda p: p.norm(dim=-1) - 1.0, torch.tensor([[0.0, 2.0, 0.0]]))
        tensor([[0., 1., 0.]])
    """
    if len(points) == 0:
        return torch.zeros_like(points)
    gradients = []
    with torch.enable_grad():
        for part in points.detach().split(chunk):
            part = part.clone().requires_grad_(True)
            distances = _distances(sdf_fn, part)
            if not distances.requires_grad:
                raise NfieldError("sdf_normals: sdf_fn's output does not depend differentiably on its input points")
            (gradient,) = torch.autograd.grad(distances.sum(), part)
            gradients.append(gradient)
    gradient = torch.cat(gradients)
    length = gradient.norm(dim=-1, keepdim=True)
    valid = torch.isfinite(length) & (length > 0)
    return torch.where(valid, gradient / torch.where(valid, length, 1.0), 0.0).detach()


@torch.no_grad()
def tetrahedral_normals(sdf_fn: SdfFn, points: torch.Tensor, step: float = 1e-3, chunk: int = 2**18) -> torch.Tensor:
    """Unit normals from four SDF samples on a tetrahedron around each point (no autograd).

    With k in {(1, -1, -1), (-1, -1, 1), (-1, 1, -1), (1, 1, 1)}, n = sum_k k sdf(p + step k) is
    4 step times the gradient up to second order; normalised. Four evaluations, in one call of
    (4 N, 3) points, cost less than an autograd backward and need no graph. Points where n is
    zero or not finite get (0, 0, 0).

    Args:
        sdf_fn: (M, 3) points -> (M,) signed distances.
        points: (N, 3) where to take the normals.
        step: the tetrahedron's half size, world units.
        chunk: the most points per SDF call.

    Returns:
        (N, 3) unit normals (or zeros), in the points' dtype.

    Example::

        >>> tetrahedral_normals(lambda p: p.norm(dim=-1) - 1.0, torch.tensor([[0.0, 2.0, 0.0]]))
        tensor([[0., 1., 0.]])
    """
    if len(points) == 0:
        return torch.zeros_like(points)
    offsets = torch.tensor(_TETRAHEDRON, dtype=points.dtype, device=points.device)
    samples = (points[None] + step * offsets[:, None]).reshape(-1, 3)
    distances = _evaluate(sdf_fn, samples, chunk).view(4, len(points))
    gradient = (distances[..., None] * offsets[:, None]).sum(0)
    length = gradient.norm(dim=-1, keepdim=True)
    valid = torch.isfinite(length) & (length > 0)
    return torch.where(valid, gradient / torch.where(valid, length, 1.0), 0.0)


def shade_normals(normals: torch.Tensor) -> torch.Tensor:
    """Normal map colours: rgb = 0.5 * n + 0.5, clamped to [0, 1].

    Args:
        normals: (N, 3) unit normals in world coordinates.

    Returns:
        (N, 3) rgb in [0, 1].
    """
    return (0.5 * normals + 0.5).clamp(0.0, 1.0)


def shade_matcap(normals: torch.Tensor, c2w: torch.Tensor) -> torch.Tensor:
    """A procedural clay look that follows the camera, from each normal in view space.

    With n the normal in camera coordinates (+x right, +y up, +z towards the viewer) and l a key
    light above-left of the camera: rgb = albedo * (0.25 + 0.65 max(n.l, 0)) + 0.15 (1 - n_z)^3
    (soft rim on silhouettes) + 0.15 max(n.h, 0)^32 (Blinn-Phong highlight, h halfway between l and
    the view direction +z), clamped to [0, 1]. Like a matcap, it assumes an orthographic view.

    Args:
        normals: (N, 3) unit normals in world coordinates.
        c2w: (4, 4) camera-to-world pose of the camera the image is seen from.

    Returns:
        (N, 3) rgb in [0, 1].
    """
    options = {"dtype": normals.dtype, "device": normals.device}
    view = normals @ torch.as_tensor(c2w, **options)[:3, :3]  # R^T n for each row n
    light = torch.tensor(_KEY_LIGHT, **options)
    light = light / light.norm()
    half = light + torch.tensor((0.0, 0.0, 1.0), **options)
    half = half / half.norm()
    diffuse = (view @ light).clamp_min(0.0)
    rim = (1.0 - view[:, 2].clamp(0.0, 1.0)) ** _RIM_POWER
    specular = (view @ half).clamp_min(0.0) ** _SHININESS
    albedo = torch.tensor(_CLAY_ALBEDO, **options)
    rgb = albedo * (_AMBIENT + _DIFFUSE * diffuse[:, None]) + (_RIM * rim + _SPECULAR * specular)[:, None]
    return rgb.clamp(0.0, 1.0)


def render_surface(
    tracer: SurfaceTracer,
    camera: PinholeCamera,
    c2w: torch.Tensor,
    *,
    shading: str = "normal",
    background: Sequence[float] = (1.0, 1.0, 1.0),
) -> dict[str, Any]:
    """Render a surface from a pinhole camera: rays per pixel, `tracer`, shading.

    Nothing here waits for the device: hit pixels are chosen by masks, not by indexing, so a
    tracer that synchronises nothing (a fused kernel) renders a frame in a fixed number of launches.

    Args:
        tracer: a `SurfaceTracer`; it gets the pixels' rays, the camera's angle per pixel (1 / fy)
            and the image width.
        camera: the intrinsics; the image is camera.height x camera.width.
        c2w: (4, 4) camera-to-world pose; the image is computed on its device.
        shading: "normal" (`shade_normals`) or "matcap" (`shade_matcap`).
        background: rgb in [0, 1] of pixels whose ray misses.

    Returns:
        A dict with
        rgb: (H, W, 3) float in [0, 1];
        depth: (H, W) distance from the camera centre to the hit along the pixel's ray (not the
            z-depth), inf at misses;
        hit: (H, W) bool;
        normals: (H, W, 3) unit world-space normals, zero at misses;
        evaluations: (H, W) int32 SDF evaluations of each pixel's ray while tracing.
    """
    if shading not in SHADINGS:
        raise NfieldError(f"render_sdf: unknown shading {shading!r}; choose one of {', '.join(SHADINGS)}")
    values = [float(v) for v in background]  # checked on the host: a device-side check would wait for the device
    if len(values) != 3 or not all(0 <= v <= 1 for v in values):
        raise NfieldError(f"render_sdf: background must be three values in [0, 1], got {values}")
    origins, directions = camera_rays(camera, c2w)
    background = torch.tensor(values, dtype=origins.dtype, device=origins.device)
    traced = tracer(origins, directions, 1.0 / camera.fy, camera.width)
    shaded = shade_normals(traced.normals) if shading == "normal" else shade_matcap(traced.normals, c2w)
    rgb = torch.where(traced.hit[:, None], shaded, background)
    shape = (camera.height, camera.width)
    return {
        "rgb": rgb.reshape(*shape, 3),
        "depth": torch.where(traced.hit, traced.t, torch.inf).reshape(shape),
        "hit": traced.hit.reshape(shape),
        "normals": torch.where(traced.hit[:, None], traced.normals, 0.0).reshape(*shape, 3),
        "evaluations": traced.evaluations.reshape(shape),
    }


def sdf_tracer(
    sdf_fn: SdfFn,
    *,
    empty_space: EmptySpaceFn | None = None,
    normals: str = "autograd",
    normal_step: float = 1e-3,
    pixel_footprint: float = PIXEL_FOOTPRINT,
    **trace_kwargs: Any,
) -> SurfaceTracer:
    """A `SurfaceTracer` of any SDF: `sphere_trace`, then normals at the hits.

    Args:
        sdf_fn: (M, 3) points -> (M,) signed distances (see `sphere_trace`).
        empty_space: optional occupancy structure (see `sphere_trace`).
        normals: "autograd" (`sdf_normals`, the exact gradient) or "tetrahedral"
            (`tetrahedral_normals` with `normal_step`, four evaluations and no graph).
        normal_step: the tetrahedron's half size, world units.
        pixel_footprint: the hit threshold is never finer than this many pixels' footprint at the
            hit's distance (0: hit_eps alone).
        trace_kwargs: passed on to `sphere_trace` (near, far, bounds, max_steps, hit_eps,
            step_scale, chunk, compact_every).
    """
    if normals not in ("autograd", "tetrahedral"):
        raise NfieldError(f"sdf_tracer: normals must be 'autograd' or 'tetrahedral', got {normals!r}")

    def trace(origins: torch.Tensor, directions: torch.Tensor, footprint: float, width: int) -> TracedSurface:
        result = sphere_trace(
            sdf_fn, origins, directions, empty_space=empty_space, footprint=pixel_footprint * footprint, **trace_kwargs
        )
        at = result.positions[result.hit]
        found = sdf_normals(sdf_fn, at) if normals == "autograd" else tetrahedral_normals(sdf_fn, at, normal_step)
        unit = torch.zeros_like(origins)
        unit[result.hit] = found
        return TracedSurface(result.t, result.hit, unit, result.evaluations)

    return trace


def render_sdf(
    sdf_fn: SdfFn,
    camera: PinholeCamera,
    c2w: torch.Tensor,
    *,
    shading: str = "normal",
    background: Sequence[float] = (1.0, 1.0, 1.0),
    empty_space: EmptySpaceFn | None = None,
    **trace_kwargs: Any,
) -> dict[str, Any]:
    """Render an SDF's surface from a pinhole camera: sphere trace, normals, shading.

    `render_surface` with `sdf_tracer(sdf_fn, empty_space=empty_space, **trace_kwargs)`.

    Args:
        sdf_fn: (M, 3) points -> (M,) signed distances (see `sphere_trace`).
        camera: the intrinsics; the image is camera.height x camera.width.
        c2w: (4, 4) camera-to-world pose; the image is computed on its device.
        shading: "normal" (`shade_normals`) or "matcap" (`shade_matcap`).
        background: rgb in [0, 1] of pixels whose ray misses.
        empty_space: optional occupancy structure (see `sphere_trace`).
        trace_kwargs: passed on to `sdf_tracer` (normals, normal_step, pixel_footprint) and
            `sphere_trace` (near, far, bounds, max_steps, hit_eps, step_scale, chunk, compact_every).

    Returns:
        `render_surface`'s dict (rgb, depth, hit, normals, evaluations).

    Example: see the module docstring.
    """
    return render_surface(
        sdf_tracer(sdf_fn, empty_space=empty_space, **trace_kwargs), camera, c2w, shading=shading, background=background
    )
