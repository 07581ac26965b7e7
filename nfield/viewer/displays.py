"""What the viewer draws for each kind of run, row band by row band.

A display draws one frame for a browser camera (`ViewCamera`) in bands of rows, so the caller can
stop between bands (training goes on between them) and a moved camera abandons a stale frame:

- `SignalDisplay` (image and video runs): the reconstruction, the target and the error map side by
  side on the plane z = 0, seen through the browser's camera. Every pixel of the frame samples the
  field at the point its ray hits, so zooming in renders the field at any resolution (the
  super-resolution a coordinate network gives), beside the target's own pixels; a video run adds
  a frame slider.
- `SDFDisplay`: the sphere-traced surface with a level-of-detail slider and the shading, or the
  mesh the run exported (mesh.ply) as a 3D object.
- `RadianceDisplay` (NeRF and KiloNeRF runs): volume rendering from the browser's camera as RGB,
  depth or opacity, with the training cameras as frustums and, for KiloNeRF, its occupied cells.

Every display's `render_rows(camera, first, last)` returns (last - first, width, 3) float32 colours
in [0, 1]; `add_controls(server, changed)` adds its settings to the page and calls `changed()` when
one moves; `framing(aspect)` is the camera a page starts with (for a 3D view of that width / height).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from nfield.colormap import inferno
from nfield.fields.kilonerf import KiloNeRFField, cell_corners, occupied_cells
from nfield.render.camera_paths import orbit_poses
from nfield.render.cameras import camera_rays
from nfield.render.radiance import render_image
from nfield.render.sphere_tracing import render_surface
from nfield.run_directory import RunDirectory
from nfield.tasks.image import ERROR_MAP_MAX
from nfield.tasks.nerf import BACKGROUNDS, cameras_from_json
from nfield.tasks.sdf_views import surface_tracer
from nfield.viewer.cameras import ViewCamera, browser_pose

#: Width / height of the 3D view a display is framed for until a browser reports its own.
DEFAULT_ASPECT = 1.6
#: Grey behind the signal panels.
PANEL_BACKGROUND = 0.12
#: Gap between panels, as a fraction of a panel's width.
PANEL_GAP = 0.08
#: The first view of an image run: the panels' width and height (with their labels above) times these.
SIDE_MARGIN, TOP_MARGIN = 1.06, 1.3
#: Rows of an image run's full frame by default: at least, and at most on CUDA and on the CPU.
MIN_SIGNAL_ROWS, MAX_SIGNAL_ROWS, MAX_SIGNAL_ROWS_CPU = 240, 1440, 720
#: The first view of an SDF run: the camera's distance from the box's centre, and the narrowest
#: view (width / height) the shape fits from there (narrower views step back).
SDF_DISTANCE, SDF_NARROWEST = 3.4, 1.1
#: The first view of a NeRF run: the first training camera's position, this much farther from the scene's centre.
PULL_BACK = 1.25
#: Training cameras drawn as frustums (evenly picked when a scene has more).
MAX_FRUSTUMS = 300


@dataclass(frozen=True)
class Framing:
    """The camera a page opens with: position, the point it orbits, world up, vertical fov (radians)."""

    position: tuple[float, float, float]
    look_at: tuple[float, float, float]
    up: tuple[float, float, float]
    fov_y: float


class SignalDisplay:
    """Image and video runs: reconstruction | target | error map, side by side on the plane z = 0.

    Panel k spans x in [c_k - a, c_k + a] and y in [-b, b] with (a, b) the image's half extent
    (the longer side is 2 units), c_k = k (2a + gap); world +y is the image's up, so pixel rows run
    down. A ray that misses every panel shows `PANEL_BACKGROUND`.

    Args:
        task: an `ImageTask` or `VideoTask` (with or without its data: without, only the
            reconstruction is shown).
        config: the run's config.json.
    """

    def __init__(self, task: Any, config: dict[str, Any]):
        self.task, self.kind = task, config["task"]
        if self.kind == "video":
            clip = config["video"]
            self.width, self.height, self.channels = clip["width"], clip["height"], 3
            self.n_frames, self.data_range = clip["frames"], 1.0
            target = task.video.frames if task.video is not None else None  # (T, H, W, 3) uint8
            self.target = None if target is None else target.float() / 255
        else:
            image = config["image"]
            self.width, self.height, self.channels = image["width"], image["height"], image["channels"]
            self.n_frames, self.data_range = 1, float(image["data_range"])
            self.target = None if task.image is None else task.image.as_float().cpu()  # (H, W, C)
        longest = max(self.width, self.height)
        self.half = (self.width / longest, self.height / longest)
        self.pitch = 2 * self.half[0] * (1 + PANEL_GAP)
        self.panels = ("reconstruction", "target", "error") if self.target is not None else ("reconstruction",)
        self.lod = self.frame = None

    def add_controls(self, server: Any, changed: Callable[[], None]) -> None:
        model = self.task.model
        n_lods = getattr(model, "n_lods", 1)
        if n_lods > 1:
            self.lod = server.gui.add_slider("LOD", min=0, max=n_lods - 1, step=1, initial_value=n_lods - 1)
            self.lod.on_update(lambda _: changed())
        if self.kind == "video":
            self.frame = server.gui.add_slider("frame", min=0, max=self.n_frames - 1, step=1, initial_value=0)
            self.frame.on_update(lambda _: changed())
        for k, name in enumerate(self.panels):
            server.scene.add_label(f"/labels/{name}", name, position=(k * self.pitch, self.half[1] * 1.08, 0.0))
        if self.target is None:
            server.gui.add_markdown("*The target is not readable here: showing the reconstruction only.*")

    def settings(self) -> tuple:
        return (self.lod.value if self.lod else None, self.frame.value if self.frame else None)

    def _half_view(self, aspect: float) -> float:
        """Half the height (world units, on the plane z = 0) the first view shows in a 3D view of
        `aspect` (width / height): every panel whole with a margin, and room for the labels above."""
        span_x = (len(self.panels) - 1) * self.pitch + 2 * self.half[0]
        return max(SIDE_MARGIN * span_x / 2 / max(aspect, 1e-3), TOP_MARGIN * self.half[1])

    def framing(self, aspect: float = DEFAULT_ASPECT) -> Framing:
        """The camera that shows every panel whole in a 3D view of `aspect` (width / height)."""
        centre = (len(self.panels) - 1) * self.pitch / 2
        fov_y = math.radians(45.0)
        distance = self._half_view(aspect) / math.tan(fov_y / 2)
        return Framing((centre, 0.0, distance), (centre, 0.0, 0.0), (0.0, 1.0, 0.0), fov_y)

    def default_rows(self, aspect: float, on_cuda: bool) -> int:
        """Rows of a full frame that show the image's pixels one to one in the first view (a view of
        `aspect`), a multiple of 16 from `MIN_SIGNAL_ROWS` up to `MAX_SIGNAL_ROWS` (CUDA) or
        `MAX_SIGNAL_ROWS_CPU`."""
        rows = math.ceil(self.height * self._half_view(aspect) / self.half[1] / 16) * 16
        return int(min(max(rows, MIN_SIGNAL_ROWS), MAX_SIGNAL_ROWS if on_cuda else MAX_SIGNAL_ROWS_CPU))

    @torch.no_grad()
    def render_rows(self, camera: ViewCamera, first: int, last: int) -> np.ndarray:
        origins, directions = camera_rays(camera.rows(first, last), camera.c2w)
        dz = directions[:, 2]
        along = -origins[:, 2] / torch.where(dz.abs() > 1e-9, dz, torch.full_like(dz, 1e-9))
        hit = along > 0
        points = origins + along.clamp_min(0)[:, None] * directions
        panel = torch.round(points[:, 0] / self.pitch).long()
        u = (points[:, 0] - panel * self.pitch) / self.half[0]
        v = -points[:, 1] / self.half[1]
        inside = hit & (panel >= 0) & (panel < len(self.panels)) & (u.abs() <= 1) & (v.abs() <= 1)
        out = torch.full((len(origins), 3), PANEL_BACKGROUND)
        coords = torch.stack([u, v], dim=-1).clamp(-1, 1)
        needs_field = inside & ((panel == 0) | (panel == 2))
        needs_target = inside & (panel >= 1)
        field = self._field(coords[needs_field]) if bool(needs_field.any()) else None
        target = self._target(coords[needs_target]) if bool(needs_target.any()) else None
        if field is not None:
            recon = torch.zeros(len(origins), 3)
            recon[needs_field] = field
            out[inside & (panel == 0)] = recon[inside & (panel == 0)].clamp(0, 1)
        if target is not None:
            truth = torch.zeros(len(origins), 3)
            truth[needs_target] = target
            out[inside & (panel == 1)] = truth[inside & (panel == 1)].clamp(0, 1)
            error_at = inside & (panel == 2)
            if bool(error_at.any()):
                error = (recon[error_at] - truth[error_at]).abs().mean(dim=-1)
                out[error_at] = inferno((error / ERROR_MAP_MAX).clamp(0, 1))
        return out.reshape(last - first, camera.width, 3).numpy()

    def _field(self, coords: torch.Tensor) -> torch.Tensor:
        """(N, 2) points in [-1, 1]^2 -> (N, 3) colours in the panel's [0, 1] scale."""
        model, device = self.task.model, self.task.device
        values = []
        for chunk in coords.split(2**16):
            chunk = chunk.to(device)
            if self.kind == "video":
                frame = self.frame.value if self.frame else 0
                t = torch.full_like(chunk[:, :1], (frame + 0.5) * 2 / self.n_frames - 1)
                values.append(model(torch.cat([chunk, t], dim=-1)).float().cpu())
            else:
                values.append(model(chunk, lod=self.lod.value if self.lod else None).float().cpu())
        return _rgb(torch.cat(values) / self.data_range)

    def _target(self, coords: torch.Tensor) -> torch.Tensor:
        """(N, 2) points in [-1, 1]^2 -> (N, 3) the target's nearest pixels, in [0, 1]."""
        column = ((coords[:, 0] + 1) / 2 * self.width).long().clamp(0, self.width - 1)
        row = ((coords[:, 1] + 1) / 2 * self.height).long().clamp(0, self.height - 1)
        if self.kind == "video":
            return self.target[self.frame.value if self.frame else 0, row, column]
        return _rgb(self.target[row, column] / self.data_range)


def _rgb(values: torch.Tensor) -> torch.Tensor:
    """(N, C) values -> (N, 3): grey images repeated, an alpha channel dropped."""
    return values.expand(-1, 3) if values.shape[1] == 1 else values[:, :3]


class SDFDisplay:
    """SDF runs: the sphere-traced surface (LOD slider, matcap or normal shading), or the exported mesh.

    Args:
        task: an `SDFTask` (its field is in the normalised box [-1, 1]^3).
        run_dir: where the run's mesh.ply is, if it was written.
    """

    def __init__(self, task: Any, run_dir: Path):
        self.task, self.run_dir = task, Path(run_dir)
        self.lod = self.shading = self.show = None
        self.mesh_handle = None

    def add_controls(self, server: Any, changed: Callable[[], None]) -> None:
        n_lods = self.task.model.n_lods
        if n_lods > 1:
            self.lod = server.gui.add_slider("LOD", min=0, max=n_lods - 1, step=1, initial_value=n_lods - 1)
            self.lod.on_update(lambda _: changed())
        self.shading = server.gui.add_dropdown("shading", ("matcap", "normal"), initial_value="matcap")
        self.shading.on_update(lambda _: changed())
        self.show = server.gui.add_dropdown("show", ("sphere-traced field", "exported mesh"), initial_value="sphere-traced field")

        def toggle(_: Any) -> None:
            self._show_mesh(server)
            changed()

        self.show.on_update(toggle)

    def _show_mesh(self, server: Any) -> None:
        wanted = self.show.value == "exported mesh"
        if wanted and self.mesh_handle is None:
            self.mesh_handle = self._add_mesh(server)
        if self.mesh_handle is not None:
            self.mesh_handle.visible = wanted

    def _add_mesh(self, server: Any) -> Any:
        import trimesh

        path = self.run_dir / "mesh.ply"
        if not path.is_file():
            server.gui.add_markdown(f"*No mesh.ply in {self.run_dir.name} yet: it is written when training ends.*")
            return None
        mesh = trimesh.load(path, force="mesh")
        mesh.vertices = np.asarray(self.task.normalisation.to_normalised(np.asarray(mesh.vertices)))
        return server.scene.add_mesh_trimesh("/mesh", mesh)

    def draws_frames(self) -> bool:
        return self.show is None or self.show.value == "sphere-traced field"

    def settings(self) -> tuple:
        return (self.lod.value if self.lod else None, self.shading.value if self.shading else "matcap", self.draws_frames())

    def framing(self, aspect: float = DEFAULT_ASPECT) -> Framing:
        """The normalised box's shape seen from `SDF_DISTANCE` (farther in a view narrower than
        `SDF_NARROWEST`, so that the shape's width still fits a view of `aspect`)."""
        fov_y = math.radians(40.0)
        distance = SDF_DISTANCE * max(1.0, SDF_NARROWEST / max(aspect, 1e-3))
        c2w = orbit_poses(1, distance, 20.0, start_azimuth_deg=30.0)[0]
        return Framing(tuple(c2w[:3, 3].tolist()), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0), fov_y)

    def render_rows(self, camera: ViewCamera, first: int, last: int) -> np.ndarray:
        model = self.task.model
        lod = self.lod.value if self.lod else None
        device = next(model.parameters()).device
        result = render_surface(
            surface_tracer(model, lod),
            camera.rows(first, last),
            camera.c2w.to(device),
            shading=self.shading.value if self.shading else "matcap",
        )
        return result["rgb"].detach().float().cpu().numpy()


class RadianceDisplay:
    """NeRF and KiloNeRF runs: the field volume-rendered from the browser camera (RGB, depth or
    opacity), the training cameras as frustums, and a KiloNeRF's occupied cells.

    Args:
        task: a `NeRFTask`.
        run_dir: the run directory (its cameras.json gives the training cameras).
    """

    MODES = ("rgb", "depth", "opacity")

    def __init__(self, task: Any, run_dir: Path):
        self.task, self.run_dir = task, Path(run_dir)
        self.aabb = task.aabb.float().cpu()
        self.cameras = self._training_cameras()
        self.mode = self.frustums = self.cells = None
        self.cells_handle = None
        self.server = None

    def _training_cameras(self) -> Optional[Any]:
        path = RunDirectory(self.run_dir).cameras
        if path.is_file():
            import json

            return cameras_from_json(json.loads(path.read_text()))
        return None if self.task.cameras is None else self.task.cameras.to("cpu")

    @property
    def is_kilonerf(self) -> bool:
        return isinstance(self.task.model["field"], KiloNeRFField)

    def add_controls(self, server: Any, changed: Callable[[], None]) -> None:
        self.server = server
        self.mode = server.gui.add_dropdown("render", self.MODES, initial_value="rgb")
        self.mode.on_update(lambda _: changed())
        if self.cameras is not None:
            self.frustums = server.gui.add_checkbox("training cameras", initial_value=True)
            handles = self._add_frustums(server)

            def toggle_frustums(_: Any) -> None:
                for handle in handles:
                    handle.visible = self.frustums.value

            self.frustums.on_update(toggle_frustums)
        if self.is_kilonerf:
            self.cells = server.gui.add_checkbox("occupied cells", initial_value=False)
            self.cells.on_update(lambda _: self._show_cells())

    def _add_frustums(self, server: Any) -> list[Any]:
        cameras = self.cameras
        picked = np.linspace(0, len(cameras) - 1, min(len(cameras), MAX_FRUSTUMS)).round().astype(int)
        scale = 0.025 * float((self.aabb[1] - self.aabb[0]).norm())
        handles = []
        for i in dict.fromkeys(picked.tolist()):
            height, width = float(cameras.height[i]), float(cameras.width[i])
            fov = 2 * math.atan(0.5 * height / float(cameras.fy[i]))
            wxyz, position = browser_pose(cameras.c2w[i])
            handles.append(
                server.scene.add_camera_frustum(
                    f"/cameras/{i}",
                    fov,
                    width / height,
                    scale=scale,
                    thickness=1.5,
                    thickness_units="screen",
                    wxyz=wxyz,
                    position=position,
                    color=(230, 120, 20),
                )
            )
        return handles

    def _show_cells(self) -> None:
        """The KiloNeRF's occupied cells as a point cloud of cell-sized squares at their centres."""
        if self.server is None or self.cells is None:
            return
        if self.cells.value and self.cells_handle is None:
            field = self.task.model["field"]
            with torch.no_grad():
                corners, size = cell_corners(field)
                occupied = occupied_cells(field, self.task.model["grid"]).cpu()
            centres = (corners + 0.5 * size).cpu()[occupied].numpy()
            size = float(size.min())
            colours = np.tile(np.array([[40, 160, 240]], dtype=np.uint8), (len(centres), 1))
            self.cells_handle = self.server.scene.add_point_cloud("/kilonerf/cells", centres, colours, point_size=0.6 * size)
        if self.cells_handle is not None:
            self.cells_handle.visible = self.cells.value

    def weights_changed(self) -> None:
        """New weights: the occupied cells are redrawn when next shown."""
        if self.cells_handle is not None:
            self.cells_handle.remove()
            self.cells_handle = None
            self._show_cells()

    def settings(self) -> tuple:
        return (self.mode.value if self.mode else "rgb",)

    def framing(self, aspect: float = DEFAULT_ASPECT) -> Framing:
        """Behind the first training camera (any `aspect`), or looking at the box from its side."""
        centre = 0.5 * (self.aabb[0] + self.aabb[1])
        if self.cameras is None or len(self.cameras) == 0:
            diagonal = float((self.aabb[1] - self.aabb[0]).norm())
            position = centre + torch.tensor([0.0, -1.0, 0.5]) * diagonal
            return Framing(tuple(position.tolist()), tuple(centre.tolist()), (0.0, 0.0, 1.0), math.radians(50.0))
        c2w = self.cameras.c2w
        up = c2w[:, :3, 1].mean(dim=0)
        up = up / up.norm().clamp_min(1e-9)
        fov = 2 * math.atan(0.5 * float(self.cameras.height[0]) / float(self.cameras.fy[0]))
        position = centre + PULL_BACK * (c2w[0, :3, 3] - centre)  # behind the first training camera, not inside its frustum
        return Framing(tuple(position.tolist()), tuple(centre.tolist()), tuple(up.tolist()), fov)

    @torch.no_grad()
    def render_rows(self, camera: ViewCamera, first: int, last: int) -> np.ndarray:
        task = self.task
        c2w = camera.c2w.to(task.device)
        origins, directions = camera_rays(camera.rows(first, last), c2w)
        background = torch.tensor(BACKGROUNDS[task.cfg.eval_background], device=task.device)
        out = render_image(task.model, task.cfg.render_settings(), task.near, origins, directions, background)
        mode = self.mode.value if self.mode else "rgb"
        if mode == "rgb":
            colours = out["rgb"].clamp(0, 1)
        elif mode == "opacity":
            colours = out["opacity"].clamp(0, 1)[:, None].expand(-1, 3)
        else:  # depth, near = bright, scaled by the farthest corner of the box from the camera
            corners = torch.cartesian_prod(*[self.aabb[:, k] for k in range(3)])
            far = float((corners - camera.c2w[:3, 3]).norm(dim=-1).max())
            colours = inferno(1 - (out["depth"].cpu() / far).clamp(0, 1))
            colours = torch.where(out["opacity"].cpu()[:, None] > 0.5, colours, torch.zeros(()))
        return colours.float().cpu().reshape(last - first, camera.width, 3).numpy()


def display_for(task: Any, config: dict[str, Any], run_dir: Path) -> Any:
    """The display that draws a run of `config`'s kind."""
    kind = config["task"]
    if kind in ("image", "video"):
        return SignalDisplay(task, config)
    if kind == "sdf":
        return SDFDisplay(task, run_dir)
    if kind == "nerf":
        return RadianceDisplay(task, run_dir)
    from nfield.errors import NfieldError

    raise NfieldError(f"{run_dir}: the viewer shows image, video, SDF and NeRF runs; render a '{kind}' run with `nfield render`")
