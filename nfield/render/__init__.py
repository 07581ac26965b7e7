"""Rendering: pinhole cameras and poses (`cameras`), and sphere tracing of signed distance fields (`sphere_trace`)."""

from nfield.render.cameras import PinholeCamera, camera_rays, look_at, orbit_poses
from nfield.render.sphere_trace import (
    SHADINGS,
    SphereTraceResult,
    ray_box_intersection,
    render_sdf,
    sdf_normals,
    shade_matcap,
    shade_normals,
    sphere_trace,
)

__all__ = [
    "PinholeCamera",
    "camera_rays",
    "look_at",
    "orbit_poses",
    "SHADINGS",
    "SphereTraceResult",
    "ray_box_intersection",
    "render_sdf",
    "sdf_normals",
    "shade_matcap",
    "shade_normals",
    "sphere_trace",
]
