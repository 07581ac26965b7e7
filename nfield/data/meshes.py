"""Shapes to fit signed distance functions to: triangle meshes and oriented point clouds.

Loading (`load_shape`) reads OBJ/PLY/STL/OFF/GLB/GLTF meshes with trimesh, and oriented point clouds
from PLY files without faces (``nx ny nz`` vertex properties) or text XYZ files (six columns
``x y z nx ny nz`` per line). Every shape is normalised into the box [-1, 1]^3 by a uniform scale
and a translation (`Normalisation`, kept so exports come back in the input's coordinates): the
bounding box is centred and its longest half-side becomes `extent` (0.9 by default, a margin that
keeps the surface away from the box faces where fields are clamped).

The distances to a mesh (the SDF ground truth, `signed_distance`) are `nfield.geometry.distance`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nfield.errors import NfieldError

MESH_SUFFIXES = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf")
POINT_SUFFIXES = (".ply", ".xyz", ".pts", ".txt")


@dataclass(frozen=True)
class Normalisation:
    """normalised = (input - center) / scale; `to_input` inverts it.

    Attributes:
        center: (3,) centre of the input's bounding box, in input units.
        scale: input units per normalised unit.
    """

    center: tuple[float, float, float]
    scale: float

    @classmethod
    def fit(cls, points: np.ndarray, extent: float = 0.9) -> Normalisation:
        """The transform that centres `points` (N, 3) and maps their longest half-side to `extent`."""
        lo, hi = points.min(axis=0), points.max(axis=0)
        half = float((hi - lo).max()) / 2
        if not half > 0:
            raise NfieldError("the shape has zero extent (all its points coincide); nothing to fit")
        return cls(tuple(float(c) for c in (lo + hi) / 2), half / extent)

    def to_normalised(self, points: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        center = (
            torch.tensor(self.center, dtype=points.dtype, device=points.device)
            if torch.is_tensor(points)
            else np.asarray(self.center)
        )
        return (points - center) / self.scale

    def to_input(self, points: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        center = (
            torch.tensor(self.center, dtype=points.dtype, device=points.device)
            if torch.is_tensor(points)
            else np.asarray(self.center)
        )
        return points * self.scale + center

    def to_dict(self) -> dict:
        return {"center": list(self.center), "scale": self.scale}

    @classmethod
    def from_dict(cls, data: dict) -> Normalisation:
        try:
            return cls(tuple(float(c) for c in data["center"]), float(data["scale"]))
        except (KeyError, TypeError, ValueError):
            raise NfieldError("a normalisation needs 'center' (3 numbers) and 'scale'") from None


@dataclass
class TriangleMesh:
    """A triangle mesh in normalised coordinates.

    Attributes:
        vertices: (V, 3) float32 in [-1, 1].
        faces: (F, 3) int64 vertex indices.
        normalisation: maps back to the input file's coordinates.
        source: where it came from.
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    normalisation: Normalisation
    source: str = ""

    def to(self, device: torch.device | str) -> TriangleMesh:
        return TriangleMesh(self.vertices.to(device), self.faces.to(device), self.normalisation, self.source)

    @property
    def triangles(self) -> torch.Tensor:
        """(F, 3, 3) corner positions."""
        return self.vertices[self.faces]

    def face_areas_and_normals(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(F,) areas and (F, 3) unit normals (zero for degenerate faces)."""
        a, b, c = self.triangles.unbind(1)
        cross = torch.linalg.cross(b - a, c - a)
        double_area = cross.norm(dim=-1)
        return double_area / 2, cross / double_area.clamp_min(1e-30)[:, None]


@dataclass
class OrientedPointCloud:
    """Surface points with unit normals, in normalised coordinates.

    Attributes:
        points: (N, 3) float32 in [-1, 1].
        normals: (N, 3) float32 unit outward normals.
        normalisation: maps back to the input file's coordinates.
        source: where it came from.
    """

    points: torch.Tensor
    normals: torch.Tensor
    normalisation: Normalisation
    source: str = ""

    def to(self, device: torch.device | str) -> OrientedPointCloud:
        return OrientedPointCloud(self.points.to(device), self.normals.to(device), self.normalisation, self.source)

    def winding_number(self, query: torch.Tensor) -> torch.Tensor:
        """Generalised winding number of the oriented cloud at `query` (N, 3): about 1 inside the
        sampled surface and 0 outside, robust to holes (Barill et al. 2018, libigl's fast winding
        number). Each point stands for a disc of area pi r^2 / k, r its distance to its k = 8th
        nearest neighbour. (N,) float64 on the CPU."""
        import igl
        from scipy.spatial import cKDTree

        points = self.points.detach().cpu().double().numpy()
        if not hasattr(self, "_areas"):
            k = min(8, len(points) - 1)
            radius = cKDTree(points).query(points, k + 1, workers=-1)[0][:, -1] if k > 0 else np.ones(len(points))
            self._areas = np.pi * radius**2 / max(k, 1)
        normals = self.normals.detach().cpu().double().numpy()
        return torch.from_numpy(igl.fast_winding_number(points, normals, self._areas, query.detach().cpu().double().numpy()))


Shape = TriangleMesh | OrientedPointCloud


# --- loading --------------------------------------------------------------------------------------
def load_shape(path: str | Path, normalisation: Normalisation | None = None, extent: float = 0.9) -> Shape:
    """Read a mesh or an oriented point cloud and normalise it into [-1, 1]^3.

    Args:
        path: mesh (.obj .ply .stl .off .glb .gltf) or point cloud (.ply without faces, .xyz .pts .txt).
        normalisation: use this transform instead of fitting one (to reload a run's shape).
        extent: half-size of the normalised bounding box's longest side.

    Returns:
        A `TriangleMesh`, or an `OrientedPointCloud` for files without faces.
    """
    path = Path(path)
    if not path.is_file():
        raise NfieldError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES + POINT_SUFFIXES:
        raise NfieldError(f"{path}: unsupported format '{suffix}'; use one of {', '.join(MESH_SUFFIXES + POINT_SUFFIXES[1:])}")
    if suffix in (".xyz", ".pts", ".txt"):
        points, normals = _read_xyz(path)
        return _point_cloud(points, normals, path, normalisation, extent)
    vertices, faces, normals = _read_with_trimesh(path)
    if faces is None:
        if normals is None:
            raise NfieldError(f"{path}: is a point cloud without normals; fitting one needs nx ny nz per point (or give a mesh)")
        return _point_cloud(vertices, normals, path, normalisation, extent)
    _check_finite(vertices, path)
    used = np.unique(faces)
    normalisation = normalisation or Normalisation.fit(vertices[used], extent)
    return TriangleMesh(
        torch.from_numpy(normalisation.to_normalised(vertices).astype(np.float32)),
        torch.from_numpy(faces.astype(np.int64)),
        normalisation,
        str(path),
    )


def _read_with_trimesh(path: Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(vertices (V, 3) float64, faces (F, 3) or None for point clouds, per-vertex normals or None)."""
    import trimesh

    try:
        loaded = trimesh.load(str(path), process=False)
    except Exception as err:  # trimesh raises many types for corrupt files
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise NfieldError(f"{path}: cannot read it as a mesh ({reason})") from None
    if isinstance(loaded, trimesh.Scene):
        geometries = list(loaded.geometry.values())
        if not geometries:
            raise NfieldError(f"{path}: the file holds no geometry")
        meshes = [g for g in geometries if isinstance(g, trimesh.Trimesh)]
        loaded = trimesh.util.concatenate(loaded.dump()) if meshes else geometries[0]
    if isinstance(loaded, trimesh.Trimesh) and len(loaded.faces) > 0:
        return np.asarray(loaded.vertices, dtype=np.float64), np.asarray(loaded.faces, dtype=np.int64), None
    vertices = np.asarray(getattr(loaded, "vertices", np.zeros((0, 3))), dtype=np.float64).reshape(-1, 3)
    if len(vertices) == 0:
        raise NfieldError(f"{path}: the mesh is empty (no faces and no points)")
    return vertices, None, _ply_normals(loaded)


def _ply_normals(loaded) -> np.ndarray | None:
    data = loaded.metadata.get("_ply_raw", {}).get("vertex", {}).get("data", {}) if hasattr(loaded, "metadata") else {}
    if not all(key in data for key in ("nx", "ny", "nz")):
        return None
    return np.stack([np.asarray(data[key], dtype=np.float64).reshape(-1) for key in ("nx", "ny", "nz")], axis=-1)


def _read_xyz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=2, comments="#")
    except ValueError as err:
        raise NfieldError(f"{path}: cannot read it as whitespace-separated numbers ({str(err).splitlines()[0]})") from None
    if values.size == 0:
        raise NfieldError(f"{path}: the point cloud is empty")
    if values.shape[1] < 6:
        raise NfieldError(f"{path}: has {values.shape[1]} columns; an oriented point cloud needs 6 (x y z nx ny nz) per line")
    return values[:, :3], values[:, 3:6]


def _point_cloud(points, normals, path: Path, normalisation: Normalisation | None, extent: float) -> OrientedPointCloud:
    _check_finite(points, path)
    if not np.isfinite(normals).all():
        raise NfieldError(f"{path}: some normals are NaN or infinite")
    lengths = np.linalg.norm(normals, axis=-1)
    if (lengths < 1e-12).any():
        raise NfieldError(f"{path}: {(lengths < 1e-12).sum()} points have zero-length normals")
    normalisation = normalisation or Normalisation.fit(points, extent)
    return OrientedPointCloud(
        torch.from_numpy(normalisation.to_normalised(points).astype(np.float32)),
        torch.from_numpy((normals / lengths[:, None]).astype(np.float32)),
        normalisation,
        str(path),
    )


def _check_finite(points: np.ndarray, path: Path) -> None:
    bad = ~np.isfinite(points).all(axis=-1)
    if bad.any():
        raise NfieldError(f"{path}: {int(bad.sum())} vertices have NaN or infinite coordinates")


# --- surface samples ------------------------------------------------------------------------------
def sample_surface(mesh: TriangleMesh, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` points uniformly distributed over the mesh's area, with the normals of their faces.

    Returns:
        points (n, 3) and unit normals (n, 3), on the mesh's device.
    """
    areas, normals = mesh.face_areas_and_normals()
    if not float(areas.sum()) > 0:
        raise NfieldError(f"{mesh.source or 'the mesh'}: every face is degenerate (zero total area)")
    face = torch.multinomial(areas, n, replacement=True, generator=generator)
    u, v = torch.rand(2, n, 1, device=areas.device, generator=generator)
    flip = (u + v) > 1  # reflect into the triangle: uniform barycentric coordinates
    u, v = torch.where(flip, 1 - u, u), torch.where(flip, 1 - v, v)
    a, b, c = mesh.triangles[face].unbind(1)
    return a + u * (b - a) + v * (c - a), normals[face]


def sample_point_cloud(
    cloud: OrientedPointCloud, n: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` points drawn with replacement from the cloud, with their normals."""
    index = torch.randint(0, len(cloud.points), (n,), device=cloud.points.device, generator=generator)
    return cloud.points[index], cloud.normals[index]


def surface_samples(shape: Shape, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """On-surface points and normals of either kind of shape."""
    if isinstance(shape, TriangleMesh):
        return sample_surface(shape, n, generator)
    return sample_point_cloud(shape, n, generator)


# --- ground-truth signed distance -----------------------------------------------------------------
