"""Triangle meshes from signed distance functions: slab-by-slab marching cubes, a memory check, mesh files.

Grid. `resolution` R samples per axis span [lo, hi] inclusive on every axis: sample (i, j, k) sits at
(x_i, x_j, x_k) with x_i = lo + i h and h = (hi - lo) / (R - 1); array axis 0 is x.

Slabs. The grid is swept along x, `slab` cell layers at a time, and scikit-image's Lewiner marching
cubes runs on each slab. Every slab after the first also re-meshes the previous slab's last cell layer
(its two grid layers are kept, not evaluated again). Marching cubes emits a cell's triangles from the
cell's eight values alone, cell by cell in layer order, so that overlap layer's triangles come out in
the same order in both runs: the last ones of the previous slab, the first ones of this slab. Pairing
them slot by slot says which vertex of this slab is which vertex of the previous one, by edge identity
rather than by coordinates (several vertices coincide where the field equals `level` at a grid point),
and the overlap's duplicate triangles are dropped. The result is the mesh that one marching-cubes pass
over the whole grid gives, up to vertex order, with peak memory O(R^2 slab) for the samples plus the
output mesh rather than O(R^3).

Orientation. Triangles wind counter-clockwise seen from the side where the field is above `level`, so
their right-hand normals point out of the shape (toward positive SDF) and the signed volume is positive.

Example::

    >>> sphere = lambda p: p.norm(dim=1) - 0.5
    >>> vertices, faces = extract_mesh(sphere, 128)
    >>> write_mesh("sphere.ply", vertices, faces)
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from nfield.errors import NfieldError
from nfield.outputs import write_atomic
from nfield.progress import progress_bar

MESH_SUFFIXES = (".ply", ".obj", ".stl", ".off", ".glb")  # formats `write_mesh` writes, chosen by suffix

_SLAB_SAMPLES = 2**24  # grid samples per slab when `slab` is None: 64 MiB of float32 ...
_MIN_AUTO_SLAB = 16  # ... but at least this many cell layers, so re-meshing one per slab stays cheap
_BYTES_PER_SAMPLE = 6  # the float32 value, marching cubes' inside mask, and slack
_SURFACE_CELLS_PER_R2 = 6  # assumed surface cells per R^2 grid cells: a box-filling cube's six faces
_BYTES_PER_SURFACE_CELL = 2 * 2 * 3 * 8 + 2 * 3 * 4  # 2 int64 triangles and 1 float32 vertex, held twice


def extract_mesh(
    sdf_fn: Callable[[torch.Tensor], torch.Tensor],
    resolution: int,
    *,
    bounds: tuple[float, float] = (-1.0, 1.0),
    level: float = 0.0,
    chunk: int = 2**18,
    slab: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The `level` isosurface of a field sampled on a resolution^3 grid, as one indexed triangle mesh.

    Args:
        sdf_fn: maps (M, 3) float32 points on `device` to their (M,) signed distances (negative
            inside); called under `torch.no_grad` with M <= `chunk`.
        resolution: R, grid samples per axis (>= 2); the cell size is (hi - lo) / (R - 1).
        bounds: (lo, hi), the box [lo, hi]^3 sampled, in sdf_fn's units.
        level: the isovalue extracted (0 for the surface of an SDF).
        chunk: the most points passed to sdf_fn at once.
        slab: new cell layers per slab (each slab also re-meshes the previous one's last); None
            picks about 2^24 samples per slab, and at least 16 layers.
        device: where the points are made and sdf_fn runs.
        progress: show a bar over the grid samples evaluated (R^3 in all).

    Returns:
        vertices (V, 3) float32 in sdf_fn's coordinates and faces (F, 3) int64, wound so that normals
        point toward values above `level` (outward for an SDF).

    Raises `NfieldError` when the memory needed is not available, when sdf_fn returns a non-finite
    value or the wrong number of values, or when the field does not cross `level` inside the box.
    """
    lo, hi = _check_bounds(bounds)
    depth = _slab_depth(resolution, slab)
    if not isinstance(chunk, int) or chunk < 1:
        raise NfieldError(f"chunk={chunk!r}: must be a positive number of points per sdf_fn call")
    check_extraction_memory(resolution, slab=depth)
    axis = torch.linspace(lo, hi, resolution, dtype=torch.float64, device=device).float()
    plane = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(-1, 2)
    cell = (hi - lo) / (resolution - 1)

    mesh = _SlabMesh(lo, cell)
    overlap = None  # the previous slab's last two grid layers
    low, high = np.inf, -np.inf
    bar = progress_bar(total=resolution**3, desc="marching cubes", unit="pt", unit_scale=True, enabled=progress)
    with torch.no_grad(), bar:
        for start in range(0, resolution - 1, depth):
            first = max(start - 1, 0)  # after the first slab, one cell layer back: the overlap
            last = min(start + depth, resolution - 1)
            values = _sample_layers(sdf_fn, axis, plane, first, last, overlap, chunk, bar.update)
            overlap = values[-2:].clone()
            values = values.cpu().numpy()
            slab_low, slab_high = _value_range(values, axis, first)
            low, high = min(low, slab_low), max(high, slab_high)
            repeated = len(_march(values[:2], level)[1]) if start > 0 else 0
            mesh.add(*_march(values, level), first, repeated)
    if mesh.n_vertices == 0:
        side = "above" if low > level else "at or below"
        raise NfieldError(
            f"the field has no surface inside the box at resolution {resolution}; its samples lie in "
            f"[{low:.4g}, {high:.4g}], all {side} level {level:g}: check bounds and level, "
            "or raise the resolution to catch thin parts"
        )
    return mesh.arrays()


def extraction_memory_bytes(resolution: int, slab: int | None = None) -> int:
    """Estimated peak host memory of `extract_mesh` at `resolution`, in bytes.

    The slab's samples (slab + 2 layers of R^2 float32 values, with their transient masks) plus the
    output mesh, assuming at most 6 R^2 surface cells with 2 triangles and 1 vertex each, held twice
    while the slabs' pieces are concatenated. sdf_fn's own memory is not included.
    """
    layers = _slab_depth(resolution, slab) + 2
    return layers * resolution**2 * _BYTES_PER_SAMPLE + _SURFACE_CELLS_PER_R2 * resolution**2 * _BYTES_PER_SURFACE_CELL


def check_extraction_memory(resolution: int, available_bytes: int | None = None, *, slab: int | None = None) -> None:
    """Raise `NfieldError` if `extraction_memory_bytes(resolution, slab)` exceeds the memory available.

    `available_bytes` None reads MemAvailable from /proc/meminfo (else the free pages os.sysconf
    reports); the check is skipped where neither exists. The message names the largest resolution
    that fits.
    """
    if available_bytes is None:
        available_bytes = available_memory_bytes()
        if available_bytes is None:
            return
    needed = extraction_memory_bytes(resolution, slab)
    if needed <= available_bytes:
        return
    fits, too_big = 1, resolution  # bisect for the largest resolution that fits
    while too_big - fits > 1:
        middle = (fits + too_big) // 2
        if extraction_memory_bytes(middle, slab) <= available_bytes:
            fits = middle
        else:
            too_big = middle
    advice = f"the largest resolution that fits is about {fits}" if fits >= 2 else "free some memory"
    raise NfieldError(
        f"--resolution {resolution} needs about {_gib(needed)} GiB for mesh extraction; "
        f"about {_gib(available_bytes)} GiB is available; {advice}"
    )


def write_mesh(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray) -> Path:
    """Write a triangle mesh, in the format its suffix names (one of `MESH_SUFFIXES`), atomically.

    Args:
        path: the file to write; missing parent folders are created.
        vertices: (V, 3) positions.
        faces: (F, 3) vertex indices.

    Returns:
        The path written. The file is first written and flushed under a temporary name next to it,
        then renamed into place, so a reader never sees half a mesh.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise NfieldError(f"{path}: cannot write a mesh as '{suffix}'; use one of {', '.join(MESH_SUFFIXES)}")
    vertices, faces = np.asarray(vertices), np.asarray(faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise NfieldError(f"{path}: a mesh needs (V, 3) vertices and (F, 3) faces, got {vertices.shape} and {faces.shape}")
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise NfieldError(f"{path}: faces index vertices outside 0..{len(vertices) - 1}")
    import trimesh  # here, not at the top: it adds 0.7 s to every command's start

    data = trimesh.Trimesh(vertices, faces, process=False).export(file_type=suffix[1:])
    return write_atomic(path, data, durable=True)


class _SlabMesh:
    """Assembles the slabs' marching-cubes meshes into one, identifying the vertices they share."""

    def __init__(self, lo: float, cell: float):
        self.lo, self.cell = lo, cell
        self.vertices: list[np.ndarray] = []  # per slab, its new vertices (n, 3) float32 in world coordinates
        self.faces: list[np.ndarray] = []  # per slab, its new faces (f, 3) int64 with global indices
        self.n_vertices = 0

    def add(self, local: np.ndarray, local_faces: np.ndarray, first: int, repeated: int) -> None:
        """Add one slab's mesh.

        Args:
            local: (V, 3) float32 vertices in grid units, relative to grid layer `first` along x.
            local_faces: (F, 3) indices into `local`.
            first: the slab's first grid layer.
            repeated: how many leading faces re-mesh the previous slab's last cell layer; they are
                that slab's last `repeated` faces, in the same order.
        """
        previous = self.faces[-1][len(self.faces[-1]) - repeated :] if self.faces else np.empty((0, 3), np.int64)
        assert len(previous) == repeated, "the overlap cell layer gave more faces than the previous slab has"
        ids = np.full(len(local), -1, np.int64)
        ids[local_faces[:repeated]] = previous
        assert np.array_equal(ids[local_faces[:repeated]], previous), "the overlap's faces do not pair up"
        new = ids < 0
        n_new = int(np.count_nonzero(new))
        ids[new] = self.n_vertices + np.arange(n_new)
        self.n_vertices += n_new
        self.vertices.append((self.lo + (local[new] + np.array([first, 0, 0])) * self.cell).astype(np.float32))
        self.faces.append(ids[local_faces[repeated:]])

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole mesh: (V, 3) float32 vertices and (F, 3) int64 faces."""
        return np.concatenate(self.vertices), np.concatenate(self.faces)


def _march(values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes on (n, R, R) float32 samples: (V, 3) float32 vertices in grid units, (F, 3) int32 faces.

    Empty arrays where no cell edge crosses `level` (scikit-image raises there instead).
    """
    above = values > level  # scikit-image's test: an edge crosses where its two ends differ
    if not above.any() or above.all():
        return np.empty((0, 3), np.float32), np.empty((0, 3), np.int32)
    from skimage.measure import marching_cubes  # imported here: scikit-image adds to every command's start

    # scikit-image's "descent" winding (worded for densities) points normals toward higher values
    vertices, faces, _, _ = marching_cubes(values, level, gradient_direction="descent")
    return vertices, faces


def _sample_layers(
    sdf_fn: Callable[[torch.Tensor], torch.Tensor],
    axis: torch.Tensor,
    plane: torch.Tensor,
    first: int,
    last: int,
    known: torch.Tensor | None,
    chunk: int,
    on_chunk: Callable[[int], Any] | None = None,
) -> torch.Tensor:
    """The field on grid layers first..last along x, (last - first + 1, R, R) float32 on axis's device.

    Args:
        axis: (R,) the grid coordinates along each axis.
        plane: (R^2, 2) the (y, z) of one layer's samples, z fastest.
        known: (k, R, R) layers first..first + k - 1 when already evaluated (copied, not evaluated
            again), or None.
        chunk: the most points per sdf_fn call.
        on_chunk: called with the number of points after each sdf_fn call (a progress bar's update).
    """
    resolution = len(axis)
    values = torch.empty((last - first + 1) * len(plane), dtype=torch.float32, device=axis.device)
    start = 0
    if known is not None:
        values[: known.numel()] = known.reshape(-1)
        start = known.numel()
    offset = first * len(plane)  # flat index of the first sample, x slowest
    for begin in range(start, len(values), chunk):
        end = min(begin + chunk, len(values))
        out = sdf_fn(_grid_points(axis, plane, offset + begin, offset + end))
        if out.numel() != end - begin:
            raise NfieldError(
                f"sdf_fn returned shape {tuple(out.shape)} for {end - begin} points; it must return one value per point"
            )
        values[begin:end] = out.reshape(-1)
        if on_chunk is not None:
            on_chunk(end - begin)
    return values.view(-1, resolution, resolution)


def _grid_points(axis: torch.Tensor, plane: torch.Tensor, begin: int, end: int) -> torch.Tensor:
    """(end - begin, 3) coordinates of the grid samples with flat indices begin..end - 1 (x slowest, z fastest)."""
    pieces = []
    while begin < end:
        layer, offset = divmod(begin, len(plane))
        count = min(end - begin, len(plane) - offset)
        pieces.append(torch.cat((axis[layer].expand(count, 1), plane[offset : offset + count]), dim=1))
        begin += count
    return torch.cat(pieces) if len(pieces) > 1 else pieces[0]


def _value_range(values: np.ndarray, axis: torch.Tensor, first: int) -> tuple[float, float]:
    """(min, max) of a slab's (n, R, R) samples starting at grid layer `first`; `NfieldError` if any is not finite."""
    low, high = float(values.min()), float(values.max())  # NaN or inf if any sample is
    if not (math.isfinite(low) and math.isfinite(high)):
        i, j, k = np.argwhere(~np.isfinite(values))[0]
        x, y, z = axis[first + i].item(), axis[j].item(), axis[k].item()
        raise NfieldError(
            f"sdf_fn returned {values[i, j, k]} at ({x:.4g}, {y:.4g}, {z:.4g}); the field must be finite everywhere in the box"
        )
    return low, high


def _slab_depth(resolution: int, slab: int | None) -> int:
    """Cell layers per slab, at most the grid's R - 1; validates both arguments."""
    if not isinstance(resolution, int) or resolution < 2:
        raise NfieldError(f"resolution={resolution!r}: must be an integer >= 2 (grid samples per axis)")
    if slab is None:
        slab = max(_MIN_AUTO_SLAB, _SLAB_SAMPLES // resolution**2 - 2)
    elif not isinstance(slab, int) or slab < 1:
        raise NfieldError(f"slab={slab!r}: must be a positive number of cell layers, or None to choose one")
    return min(slab, resolution - 1)


def _check_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    """(lo, hi) as floats with lo < hi, both finite."""
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise NfieldError(f"bounds={bounds!r}: must be two numbers (lo, hi)") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise NfieldError(f"bounds={bounds!r}: need finite lo < hi")
    return lo, hi


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo, else free physical pages from os.sysconf, else None."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _gib(n_bytes: int) -> str:
    """A byte count in GiB with three significant digits."""
    return f"{n_bytes / 2**30:.3g}"
