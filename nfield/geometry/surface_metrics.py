"""How close a reconstructed surface is to a reference one.

Chamfer-L1 and normal consistency between two sampled surfaces (a reconstructed and a reference
one), matching samples to the other side's nearest sample (scipy's KD-tree) or, when its mesh is
given, to the exact closest point on its triangles (libigl's AABB tree); and the volumetric IoU of
two inside/outside labellings of the same query points. They take numpy arrays or torch tensors
and compute in float64 numpy.
"""

from __future__ import annotations

import numpy as np
import torch

from nfield.errors import NfieldError

ArrayLike = np.ndarray | torch.Tensor  # the metrics take either


def chamfer_l1(points_a: ArrayLike, points_b: ArrayLike) -> float:
    """Chamfer-L1 distance between two point sets, in their units.

    0.5 * (mean over a of the Euclidean distance to the nearest point of b + the same from b to a):
    the "Chamfer-L1" of Occupancy Networks and NGLOD, an average of plain (not squared) distances.
    Between samples of two surfaces it has a floor from the sampling alone (see `surface_metrics`
    for the exact point-to-mesh version).

    Args:
        points_a: (N, 3) points.
        points_b: (M, 3) points.

    Returns:
        The distance, 0 for identical sets.

    Example::

        >>> chamfer_l1(np.zeros((1, 3)), np.array([[0.0, 0.0, 2.0]]))
        2.0
    """
    from scipy.spatial import cKDTree  # imported here: scipy adds 0.3 s to every command's start

    a, b = _points(points_a, "points_a"), _points(points_b, "points_b")
    return 0.5 * float(cKDTree(b).query(a, workers=-1)[0].mean() + cKDTree(a).query(b, workers=-1)[0].mean())


def normal_consistency(points_a: ArrayLike, normals_a: ArrayLike, points_b: ArrayLike, normals_b: ArrayLike) -> float:
    """Normal consistency of two oriented point sets: how well normals agree at nearest neighbours.

    0.5 * (mean over a of |n_a . n_b| with n_b the unit normal of a's nearest point in b + the same
    from b to a), after normalising every normal to unit length. Orientation is ignored.

    Args:
        points_a, normals_a: (N, 3) points and their normals.
        points_b, normals_b: (M, 3) points and their normals.

    Returns:
        A value in [0, 1]: 1 where nearest normals are parallel, about 0.5 for random directions.
    """
    return surface_metrics(points_a, normals_a, points_b, normals_b)["normal_consistency"]


Mesh = tuple[ArrayLike, ArrayLike]  # (vertices (V, 3), faces (F, 3))


def surface_metrics(
    points_a: ArrayLike,
    normals_a: ArrayLike,
    points_b: ArrayLike,
    normals_b: ArrayLike,
    mesh_a: Mesh | None = None,
    mesh_b: Mesh | None = None,
) -> dict[str, float]:
    """`chamfer_l1` and `normal_consistency` of two sampled surfaces, from one nearest search each way.

    Each direction matches the samples of one side with the other side: with that side's mesh, the
    exact closest point on its triangles and that triangle's normal (libigl's AABB tree); without
    it, the nearest of its samples and that sample's normal (a KD-tree). Against a mesh there is no
    sampling floor: two samplings of the same mesh give 0, while point-to-point matching of N samples
    gives about 0.5 sqrt(area / N).

    Args:
        points_a, normals_a: (N, 3) samples of surface a and their normals.
        points_b, normals_b: (M, 3) samples of surface b and their normals.
        mesh_a, mesh_b: optional (vertices (V, 3), faces (F, 3)) of the sampled surfaces.

    Returns:
        {"chamfer_l1": ..., "normal_consistency": ...}.
    """
    a, b = _points(points_a, "points_a"), _points(points_b, "points_b")
    normals_a, normals_b = _normals(normals_a, a, "normals_a"), _normals(normals_b, b, "normals_b")
    distance_ab, matched_ab = _closest(a, b, normals_b, mesh_b)
    distance_ba, matched_ba = _closest(b, a, normals_a, mesh_a)
    return {
        "chamfer_l1": 0.5 * float(distance_ab.mean() + distance_ba.mean()),
        "normal_consistency": 0.5
        * float(np.abs((normals_a * matched_ab).sum(1)).mean() + np.abs((normals_b * matched_ba).sum(1)).mean()),
    }


def volumetric_iou(inside_a: ArrayLike, inside_b: ArrayLike) -> float:
    """Intersection over union of two shapes, from whether each of the same N query points is inside.

    Args:
        inside_a, inside_b: (N,) bool, True where a query point is inside the shape.

    Returns:
        |a & b| / |a | b|, in [0, 1]; 1 when neither shape contains any point.
    """
    a, b = _as_numpy(inside_a), _as_numpy(inside_b)
    for inside, name in ((a, "inside_a"), (b, "inside_b")):
        if inside.dtype != bool or inside.ndim != 1 or len(inside) == 0:
            raise NfieldError(f"{name}: expected a non-empty (N,) bool mask, got {inside.dtype} of shape {inside.shape}")
    if a.shape != b.shape:
        raise NfieldError(f"inside_a and inside_b label different query points: shapes {a.shape} and {b.shape}")
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def _closest(points: np.ndarray, samples: np.ndarray, normals: np.ndarray, mesh: Mesh | None) -> tuple[np.ndarray, np.ndarray]:
    """For each of `points` (N, 3): the distance to the other surface and the unit normal there,
    (N,) and (N, 3); from its `mesh` when given, else from its `samples` and their `normals`."""
    if mesh is None:
        from scipy.spatial import cKDTree

        distance, index = cKDTree(samples).query(points, workers=-1)
        return distance, normals[index]
    import igl

    vertices = np.ascontiguousarray(_as_numpy(mesh[0]), dtype=np.float64)
    faces = np.ascontiguousarray(_as_numpy(mesh[1]), dtype=np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise NfieldError(f"a mesh needs (V, 3) vertices and a non-empty (F, 3) faces, got {vertices.shape} and {faces.shape}")
    squared, face, _ = igl.point_mesh_squared_distance(points, vertices, faces)
    corners = vertices[faces[face]]
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    length = np.linalg.norm(face_normals, axis=1, keepdims=True)
    return np.sqrt(squared), np.divide(face_normals, length, out=np.zeros_like(face_normals), where=length > 0)


def _as_numpy(array: ArrayLike) -> np.ndarray:
    """A numpy view or copy of a numpy array or torch tensor (detached, on the CPU)."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu()
        return (array.double() if array.is_floating_point() else array).numpy()
    return np.asarray(array)


def _points(points: ArrayLike, name: str) -> np.ndarray:
    """(N, 3) float64 finite points, N >= 1; `NfieldError` otherwise."""
    array = _as_numpy(points).astype(np.float64)
    if array.ndim != 2 or array.shape[1] != 3 or len(array) == 0:
        raise NfieldError(f"{name}: expected a non-empty (N, 3) array of points, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise NfieldError(f"{name}: holds non-finite coordinates")
    return array


def _normals(normals: ArrayLike, points: np.ndarray, name: str) -> np.ndarray:
    """(N, 3) float64 unit normals, one per point; `NfieldError` for a count mismatch or a zero normal."""
    array = _as_numpy(normals).astype(np.float64)
    if array.shape != points.shape:
        raise NfieldError(f"{name}: expected one normal per point, shape {points.shape}, got {array.shape}")
    length = np.linalg.norm(array, axis=1, keepdims=True)
    if not (np.isfinite(length).all() and (length > 0).all()):
        raise NfieldError(f"{name}: holds zero-length or non-finite normals; they cannot be normalised")
    return array / length
