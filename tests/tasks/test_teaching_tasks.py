"""INT (nonparametric teaching) in the audio, video and SDF tasks: each trains on exactly the
candidates with the largest error, in the share the schedule says, resumes exactly, and is a flag
of fit-audio, fit-video and fit-sdf (refused, in one line, for point clouds)."""

import dataclasses
import json

import imageio.v3 as iio
import numpy as np
import pytest
import soundfile
import torch
import trimesh

from nfield.data.audio import Audio, time_coordinates
from nfield.data.meshes import Normalisation, OrientedPointCloud, TriangleMesh
from nfield.data.video import Video, video_coordinates
from nfield.encodings import FrequencyConfig
from nfield.encodings.octree import OctreeFeaturesConfig
from nfield.errors import NfieldError
from nfield.fields import FieldConfig
from nfield.fields.sdf import NGLODConfig
from nfield.networks import MLPConfig
from nfield.tasks.audio import AudioTask, AudioTaskConfig
from nfield.tasks.sdf import SDFTask, SDFTaskConfig
from nfield.tasks.teaching import TeachingConfig, selection_ratio
from nfield.tasks.video import VideoTask, VideoTaskConfig
from nfield.training.trainer import TrainConfig, Trainer, seed_everything
from tests.run_checks import cli

ON = TeachingConfig(enabled=True)
FIELD = FieldConfig(FrequencyConfig(n_frequencies=6), MLPConfig(n_neurons=32, n_hidden_layers=2))
NGLOD = NGLODConfig(OctreeFeaturesConfig(base_lod=2, n_lods=2, feature_dim=4), n_neurons=16)
SDF_CFG = SDFTaskConfig(
    batch_size=256, pool_size=2048, resample_every=8, octree_points=4096, eval_points=512, teaching=ON, candidate_batches=5
)  # 5 x 256 = 1,280 candidates of 2,048 pool points
RATE, N_SAMPLES = 8000, 400
FRAMES, HEIGHT, WIDTH = 4, 16, 16
SPHERE = trimesh.creation.icosphere(subdivisions=2, radius=0.5)


def chirp(n=N_SAMPLES):
    """(n, 1) float32: a rising sine sweep."""
    t = np.arange(n) / RATE
    return (0.6 * np.sin(2 * np.pi * (200 * t + 8000 * t**2)))[:, None].astype(np.float32)


def clip():
    """(FRAMES, HEIGHT, WIDTH, 3) uint8: a bright square moving over a gradient."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    frames = []
    for k in range(FRAMES):
        square = (abs(x - 4 - 2 * k) < 3) & (abs(y - 8) < 3)
        frame = np.stack([x / WIDTH, y / HEIGHT, 0.5 + 0 * x], -1)
        frames.append(np.where(square[..., None], [0.9, 0.9, 0.1], frame))
    return (np.stack(frames) * 255 + 0.5).astype(np.uint8)


def sphere_mesh():
    vertices, faces = torch.tensor(SPHERE.vertices, dtype=torch.float32), torch.tensor(SPHERE.faces)
    return TriangleMesh(vertices, faces, Normalisation((0.0, 0.0, 0.0), 1.0), "sphere")


def worst(field, candidates, inputs, targets, step, total):
    """The candidates (index (N,)) a teacher must pick at `step`: the selection_ratio share with the
    largest squared error, recomputed here from the field's outputs."""
    with torch.no_grad():
        error = (field(inputs).float() - targets.float()).square().mean(-1)
    k = round(selection_ratio(step, total, ON) * len(candidates))
    return sorted(candidates[error.topk(k).indices].tolist())


def copy_of(generator):
    """A fresh generator in `generator`'s state (to redraw the candidates a task is about to draw)."""
    copy = torch.Generator()
    copy.set_state(generator.get_state())
    return copy


# --- the picks ----------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size", [1024, 128])  # the clip full-batch (every sample a candidate), then random batches
def test_audio_trains_on_the_worst_fitted_samples(batch_size):
    seed_everything(0)
    audio = Audio(torch.from_numpy(chirp()), RATE, "chirp")
    task = AudioTask(audio, FIELD, AudioTaskConfig(batch_size=batch_size, teaching=ON), seed=0)
    n_candidates = N_SAMPLES if batch_size > N_SAMPLES else batch_size
    for step, share in ((0, 0.2), (60, 0.68)):  # step 60 of 100: six stages of 0.08 grown, and a pick (every 30 steps)
        task.update(step, 100)
        generator = copy_of(task.generator)
        times, targets = task.sample(step)
        if batch_size > N_SAMPLES:
            candidates = torch.arange(N_SAMPLES)
        else:
            candidates = torch.randint(0, N_SAMPLES, (batch_size,), generator=generator)
        expected = worst(task.model, candidates, time_coordinates(candidates, N_SAMPLES), audio.samples[candidates], step, 100)
        picked = task.teacher.picked
        assert len(times) == len(picked) == round(share * n_candidates)
        assert sorted(picked.tolist()) == expected
        assert torch.equal(times, time_coordinates(picked, N_SAMPLES)) and torch.equal(targets, audio.samples[picked])
    task.update(61, 100)  # between picks: the same samples again
    assert torch.equal(task.sample(61)[0], times)


def test_video_trains_on_the_worst_of_five_batches_of_pixels():
    seed_everything(0)
    video = Video(torch.from_numpy(clip()), 10.0, "clip")
    task = VideoTask(video, FIELD, VideoTaskConfig(batch_size=64, teaching=ON, candidate_batches=5), seed=0)
    task.update(0, 100)
    generator = copy_of(task.generator)
    coords, targets = task.sample(0)
    shape = (320,)  # 5 training batches of candidates
    frame, row, column = (torch.randint(0, n, shape, generator=generator) for n in (FRAMES, HEIGHT, WIDTH))
    inputs = video_coordinates(frame, row, column, (FRAMES, HEIGHT, WIDTH))
    flat = (frame * HEIGHT + row) * WIDTH + column
    expected = worst(task.model, flat, inputs, video.frames[frame, row, column].float() / 255, 0, 100)
    picked = task.teacher.picked
    assert len(coords) == len(picked) == 64  # the start ratio 0.2 of 5 batches: one batch
    assert sorted(picked.tolist()) == expected
    frame, row, column = picked // (HEIGHT * WIDTH), picked // WIDTH % HEIGHT, picked % WIDTH
    assert torch.equal(coords, video_coordinates(frame, row, column, (FRAMES, HEIGHT, WIDTH)))
    assert torch.equal(targets, video.frames[frame, row, column].float() / 255)
    task.update(60, 100)  # a pick (every 30 steps there) at share 0.68: 218 of the 320 candidates
    assert len(task.sample(60)[0]) == 218
    uniform = VideoTask(video, FIELD, VideoTaskConfig(batch_size=64), seed=0)
    assert len(uniform.sample(0)[0]) == 64


def test_sdf_trains_on_the_pool_points_with_the_largest_finest_lod_error():
    seed_everything(0)
    task = SDFTask(sphere_mesh(), NGLOD, SDF_CFG, seed=0)
    for step in (0, 8):  # step 8 of 20 picks only because the pool is redrawn (the schedule's interval is 20 there)
        task.update(step, 20)
        generator = copy_of(task.generator)
        batch = task.sample(step)
        pool = task._pool
        candidates = torch.randperm(2048, generator=generator)[:1280]
        finest = lambda x: task.model.forward_all_lods(x)[:, -1:]  # noqa: E731
        expected = worst(finest, candidates, pool["positions"][candidates], pool["distance"][candidates, None], step, 20)
        picked = task.teacher.picked
        assert task.teacher.picked_at == step and len(picked) == round(selection_ratio(step, 20, ON) * 1280)
        assert sorted(picked.tolist()) == expected
        assert batch.keys() == pool.keys() >= {"positions", "distance", "on_surface", "normals"}
        assert all(torch.equal(batch[key], pool[key][picked]) for key in pool)
    task.update(9, 20)
    assert torch.equal(task.sample(9)["positions"], batch["positions"])
    normals = torch.nn.functional.normalize(torch.randn(64, 3), dim=-1)
    with pytest.raises(NfieldError, match="point cloud has no target distances"):
        SDFTask(OrientedPointCloud(normals * 0.5, normals, Normalisation((0.0, 0.0, 0.0), 1.0)), NGLOD, SDF_CFG)


# --- resume -------------------------------------------------------------------------------------
def audio_task():
    return AudioTask(Audio(torch.from_numpy(chirp()), RATE, "chirp"), FIELD, AudioTaskConfig(batch_size=128, teaching=ON))


def video_task():
    return VideoTask(
        Video(torch.from_numpy(clip()), 10.0, "clip"), FIELD, VideoTaskConfig(batch_size=64, teaching=ON, candidate_batches=5)
    )


def sdf_task():
    return SDFTask(sphere_mesh(), NGLOD, SDF_CFG)


@pytest.mark.parametrize("make", [audio_task, video_task, sdf_task], ids=["audio", "video", "sdf"])
def test_teaching_resumes_on_the_same_samples(tmp_path, make):
    # 40 steps: picks every step up to 10, then every 10 (and for the SDF at each pool, every 8);
    # the pause at 15 falls between picks, so the resumed run trains on the checkpoint's picks
    cfg = TrainConfig(steps=40, lr=1e-3, checkpoint_every=0, eval_every=0, progress=False)

    def trainer(run_dir):
        seed_everything(0)
        task = make()
        return task, Trainer(task, cfg, run_dir)

    whole, run = trainer(tmp_path / "whole")
    run.fit(stop_after=30)
    _, paused = trainer(tmp_path / "paused")
    paused.fit(stop_after=15)
    resumed, run = trainer(tmp_path / "paused")
    assert run.resume() == 15 and resumed.teacher.picked is not None  # the checkpoint's picks
    assert torch.equal(resumed.teacher.picked, paused.task.teacher.picked)
    run.fit(stop_after=30)
    assert whole.teacher.picked_at == resumed.teacher.picked_at > 15
    assert torch.equal(whole.teacher.picked, resumed.teacher.picked)
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


# --- the command line ---------------------------------------------------------------------------
def test_fit_audio_and_fit_video_take_teaching_and_resume_it(tmp_path, capsys):
    soundfile.write(str(tmp_path / "chirp.wav"), chirp(), RATE, subtype="FLOAT")
    (tmp_path / "frames").mkdir()
    for k, frame in enumerate(clip()):
        iio.imwrite(tmp_path / "frames" / f"{k:03d}.png", frame)
    small = {
        "fit-audio": (tmp_path / "chirp.wav", "--n-neurons", 32, "--n-hidden-layers", 2),
        "fit-video": (tmp_path / "frames", "--batch-size", 64, "--n-levels", 4, "--log2-hashmap-size", 10),
    }
    for command, argv in small.items():
        out = tmp_path / command
        status, lines, err = cli(capsys, command, *argv, "--teaching", "--steps", 10, "--out", out, "--no-progress")
        assert status == 0, err
        assert np.isfinite(json.loads(lines[-1])["psnr"])
        assert json.loads((out / "config.json").read_text())["task_config"]["teaching"]["enabled"] is True
        status, lines, err = cli(capsys, command, argv[0], "--resume", "--steps", 15, "--out", out, "--no-progress")
        assert status == 0 and json.loads(lines[-1])["step"] == 15, err  # the nested teaching config read back


def test_fit_sdf_takes_teaching_for_meshes_and_refuses_it_for_point_clouds(tmp_path, capsys):
    SPHERE.export(tmp_path / "sphere.obj")
    points, face = trimesh.sample.sample_surface(SPHERE, 500, seed=0)
    np.savetxt(tmp_path / "sphere.xyz", np.concatenate([points, SPHERE.face_normals[face]], axis=1))
    small = ("--model", "siren", "--hidden-dim", 16, "--hidden-layers", 1, "--batch-size", 256, "--pool-size", 2048)
    small += ("--mesh-resolution", 16, "--metric-points", 1024, "--steps", 30, "--no-progress")
    status, lines, err = cli(capsys, "fit-sdf", tmp_path / "sphere.obj", "--teaching", *small, "--out", tmp_path / "mesh")
    assert status == 0, err
    assert np.isfinite(json.loads(lines[-1])["distance_mae"])
    assert json.loads((tmp_path / "mesh" / "config.json").read_text())["task_config"]["teaching"]["enabled"] is True
    status, _, err = cli(capsys, "fit-sdf", tmp_path / "sphere.xyz", "--teaching", *small, "--out", tmp_path / "cloud")
    lines = err.strip().splitlines()
    assert status == 1 and len(lines) == 1 and lines[0].startswith("nfield: error:"), err
    assert "--teaching needs a mesh" in lines[0] and "no target distances" in lines[0]
    assert not (tmp_path / "cloud").exists()  # refused before the run directory is written


def test_nerf_trains_on_the_rays_it_renders_worst_and_resumes_the_picks(tmp_path):
    from nfield.data.scenes import load_scene
    from nfield.fields.radiance import NGPFieldConfig
    from nfield.render.cameras import pixel_rays
    from nfield.render.occupancy import OccupancyGridConfig
    from nfield.render.radiance import render_nerf_rays
    from nfield.tasks.nerf import NeRFTask, NeRFTaskConfig
    from scenes.synthetic import generate

    scene = load_scene(generate("textured", tmp_path / "scene", size=12, n_train=3, n_val=1, n_test=1))
    field = NGPFieldConfig()
    field = dataclasses.replace(field, grid=dataclasses.replace(field.grid, n_levels=4, log2_hashmap_size=10))
    cfg = NeRFTaskConfig(batch_rays=50, steps_per_ray=32, occupancy=OccupancyGridConfig(resolution=8), teaching=ON)
    seed_everything(0)
    task = NeRFTask(scene, field, cfg, seed=0)
    task.update(0, 100)
    generator = copy_of(task.generator)
    batch = task.sample(0)
    n, height, width, _ = scene.train.images.shape
    camera, row, column = (torch.randint(0, m, (50,), generator=generator) for m in (n, height, width))
    flat = (camera * height + row) * width + column
    origins, directions = pixel_rays(task.cameras, camera, column.float() + 0.5, row.float() + 0.5)
    settings = cfg.render_settings()
    with torch.no_grad():
        rgb = render_nerf_rays(task.model, settings, task.near, origins, directions, torch.zeros(50, 3), train=False)[0]["rgb"]
    pixels = scene.train.images[camera, row, column].float() / 255
    target = pixels[:, :3] * pixels[:, 3:] if pixels.shape[1] == 4 else pixels  # on black
    error = (rgb.float() - target).square().mean(-1)
    expected = sorted(flat[error.topk(10).indices].tolist())  # the start ratio 0.2 of 50 rays
    assert sorted(task.teacher.picked.tolist()) == expected and len(batch["camera"]) == 10
    picked = task.teacher.picked
    assert torch.equal(batch["camera"], picked // (height * width)) and torch.equal(batch["u"], (picked % width).float() + 0.5)
    resumed = NeRFTask(scene, field, cfg, seed=1)
    resumed.load_state_dict(task.state_dict())
    resumed.update(1, 100)
    task.update(1, 100)
    assert torch.equal(resumed.sample(1)["camera"], task.sample(1)["camera"])  # picks and generator carried over
