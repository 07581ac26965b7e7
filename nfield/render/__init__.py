"""Rendering: cameras and rays (`cameras`), camera paths for videos (`camera_paths`) and their files
(`camera_path_files`), sphere tracing of signed distance fields (`sphere_tracing`), and volume rendering
of radiance fields (`samplers`, `volume`)."""

from nfield.render.camera_path_files import load_camera_path
from nfield.render.camera_paths import interpolated_path, orbit_poses, scene_orbit, spiral_path
from nfield.render.cameras import (
    CameraSet,
    PinholeCamera,
    camera_rays,
    distort,
    image_rays,
    look_at,
    pixel_rays,
    undistort,
)
from nfield.render.samplers import (
    OccupancyGrid,
    OccupancyGridConfig,
    RaySamples,
    importance_samples,
    ray_aabb,
    stratified_samples,
)
from nfield.render.sphere_tracing import (
    SHADINGS,
    SphereTraceResult,
    SurfaceTracer,
    TracedSurface,
    ray_box_intersection,
    render_sdf,
    render_surface,
    sdf_normals,
    sdf_tracer,
    shade_matcap,
    shade_normals,
    sphere_trace,
    tetrahedral_normals,
)
from nfield.render.volume import accumulate, composite, render_rays, render_weights

__all__ = [
    "CameraSet",
    "PinholeCamera",
    "camera_rays",
    "distort",
    "image_rays",
    "interpolated_path",
    "load_camera_path",
    "look_at",
    "orbit_poses",
    "pixel_rays",
    "scene_orbit",
    "spiral_path",
    "undistort",
    "OccupancyGrid",
    "OccupancyGridConfig",
    "RaySamples",
    "importance_samples",
    "ray_aabb",
    "stratified_samples",
    "accumulate",
    "composite",
    "render_rays",
    "render_weights",
    "SHADINGS",
    "SphereTraceResult",
    "SurfaceTracer",
    "TracedSurface",
    "ray_box_intersection",
    "render_sdf",
    "render_surface",
    "sdf_normals",
    "sdf_tracer",
    "shade_matcap",
    "shade_normals",
    "sphere_trace",
    "tetrahedral_normals",
]
