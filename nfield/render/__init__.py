"""Rendering: cameras and rays (`cameras`), camera paths for videos (`camera_paths`) and their files
(`camera_path_files`), rays against boxes and packed samples along rays (`rays`), sphere tracing of
signed distance fields (`sphere_tracing`), volume rendering of radiance fields (`samplers`, `occupancy`,
`volume`), and rendering a trained radiance model's rays, images and camera paths (`radiance`)."""

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
from nfield.render.occupancy import OccupancyGrid, OccupancyGridConfig
from nfield.render.radiance import (
    RadianceRenderSettings,
    composite_on,
    half_precision,
    march_step,
    ray_bounds,
    render_culled,
    render_image,
    render_nerf_rays,
    render_poses,
)
from nfield.render.rays import RaySamples, ray_aabb, ray_box_intersection
from nfield.render.samplers import importance_samples, stratified_samples
from nfield.render.sphere_tracing import (
    SHADINGS,
    SphereTraceResult,
    SurfaceTracer,
    TracedSurface,
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
    "RaySamples",
    "ray_aabb",
    "ray_box_intersection",
    "OccupancyGrid",
    "OccupancyGridConfig",
    "importance_samples",
    "stratified_samples",
    "accumulate",
    "composite",
    "render_rays",
    "render_weights",
    "SHADINGS",
    "SphereTraceResult",
    "SurfaceTracer",
    "TracedSurface",
    "render_sdf",
    "render_surface",
    "sdf_normals",
    "sdf_tracer",
    "shade_matcap",
    "shade_normals",
    "sphere_trace",
    "tetrahedral_normals",
    "RadianceRenderSettings",
    "composite_on",
    "half_precision",
    "march_step",
    "ray_bounds",
    "render_culled",
    "render_image",
    "render_nerf_rays",
    "render_poses",
]
