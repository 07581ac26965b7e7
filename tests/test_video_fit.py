"""fit-video end to end: a generated clip through GIF, mp4 and a folder of frames; render and eval."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from nfield.data.video import load_video, video_coordinates
from nfield.errors import NfieldError
from tests.run_checks import cli

FRAMES, HEIGHT, WIDTH = 8, 24, 32


def moving_disc():
    """(T, H, W, 3) uint8: a red disc crossing a blue-to-green gradient."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    frames = []
    for k in range(FRAMES):
        background = np.stack([0.1 + 0 * x, x / WIDTH, 1 - x / WIDTH], -1)
        disc = (x - 6 - 2.5 * k) ** 2 + (y - 12) ** 2 < 25
        frames.append(np.where(disc[..., None], [0.9, 0.15, 0.1], background))
    return (np.stack(frames) * 255 + 0.5).astype(np.uint8)


def test_every_container_reads_the_same_frames(tmp_path):
    clip = moving_disc()
    iio.imwrite(tmp_path / "clip.gif", clip, duration=100, loop=0)
    (tmp_path / "frames").mkdir()
    for k, frame in enumerate(clip):
        iio.imwrite(tmp_path / "frames" / f"{k:03d}.png", frame)
    gif, folder = load_video(tmp_path / "clip.gif"), load_video(tmp_path / "frames")
    assert torch.equal(folder.frames, torch.from_numpy(clip)) and folder.fps == 25.0
    assert gif.frames.shape == (FRAMES, HEIGHT, WIDTH, 3) and gif.fps == pytest.approx(10.0)
    assert (gif.frames.float() - folder.frames.float()).abs().mean() < 8  # GIF's palette quantises colours
    assert load_video(tmp_path / "frames", downscale=2, max_frames=3).frames.shape == (3, HEIGHT // 2, WIDTH // 2, 3)
    coords = video_coordinates(torch.tensor([0, 7]), torch.tensor([0, 23]), torch.tensor([0, 31]), (FRAMES, HEIGHT, WIDTH))
    assert torch.allclose(coords, torch.tensor([[-1 + 1 / 32, -1 + 1 / 24, -1 + 1 / 8], [1 - 1 / 32, 1 - 1 / 24, 1 - 1 / 8]]))
    (tmp_path / "empty").mkdir()
    for path, message in ((tmp_path / "empty", "found none"), (tmp_path / "nope.mp4", "no such file")):
        with pytest.raises(NfieldError, match=message):
            load_video(path)


def test_hash_fits_a_clip_and_renders_at_twice_the_frames(tmp_path, capsys):
    iio.imwrite(tmp_path / "clip.mp4", moving_disc(), fps=8, codec="libx264", quality=10, macro_block_size=8)
    target = load_video(tmp_path / "clip.mp4")
    small = ("--batch-size", 4096, "--n-levels", 8, "--log2-hashmap-size", 14)
    argv = ("fit-video", tmp_path / "clip.mp4", *small, "--steps", 100, "--out", tmp_path / "run", "--no-progress")
    status, out, err = cli(capsys, *argv)
    assert status == 0, err
    result = json.loads(out[-1])
    assert result["psnr"] > 28 and len(result["psnr_per_frame"]) == FRAMES, result  # measured 32.7 dB
    written = iio.imread(tmp_path / "run" / "reconstruction.mp4", plugin="FFMPEG", index=None)
    assert written.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert json.loads((tmp_path / "run" / "psnr_per_frame.json").read_text()) == pytest.approx(result["psnr_per_frame"], abs=1e-3)
    status, out, err = cli(capsys, "eval", tmp_path / "run")
    assert status == 0 and json.loads(out[-1])["psnr"] == pytest.approx(result["psnr"], abs=1e-4), err
    status, _, err = cli(capsys, "render", tmp_path / "run", "--frames", 2 * FRAMES, "--fps", 16, "--out", tmp_path / "x2.mp4")
    assert status == 0, err
    doubled = iio.imread(tmp_path / "x2.mp4", plugin="FFMPEG", index=None)
    assert doubled.shape == (2 * FRAMES, HEIGHT, WIDTH, 3) and iio.immeta(tmp_path / "x2.mp4", plugin="FFMPEG")["fps"] == 16
    # the in-between frames stay close to their neighbours in the clip
    between = 0.5 * (target.frames[:-1].float() + target.frames[1:].float())
    assert (doubled[2:-1:2].astype(np.float32) - between.numpy()).__abs__().mean() < 25
    status, _, err = cli(capsys, "render", tmp_path / "run", "--width", 2 * WIDTH, "--out", tmp_path / "wide.mp4")
    assert status == 0, err  # the height follows the clip's aspect ratio
    assert iio.imread(tmp_path / "wide.mp4", plugin="FFMPEG", index=None).shape == (FRAMES, 2 * HEIGHT, 2 * WIDTH, 3)
    status, lines, _ = cli(capsys, "info", tmp_path / "run")
    assert status == 0 and "task video" in lines[0]
    check_viewer_scene(tmp_path / "run", target)


def test_the_final_json_says_which_frames_it_scored(tmp_path, capsys):
    """The preset scores 8 evenly spaced frames at the end; with 16 frames the JSON names them, and
    their PSNRs are psnr_per_frame.json's (which has every frame) at those indices."""
    clip = np.concatenate([moving_disc(), moving_disc()[::-1]])[:, ::4, ::4]  # 16 frames of 8x6
    (tmp_path / "frames").mkdir()
    for k, frame in enumerate(clip):
        iio.imwrite(tmp_path / "frames" / f"{k:03d}.png", frame)
    small = ("--batch-size", 1024, "--n-levels", 4, "--log2-hashmap-size", 10, "--steps", 10, "--eval-every", 0)
    status, out, err = cli(capsys, "fit-video", tmp_path / "frames", *small, "--out", tmp_path / "run", "--no-progress")
    assert status == 0, err
    result = json.loads(out[-1])
    assert result["scored_frames"] == [0, 2, 4, 6, 9, 11, 13, 15] and len(result["psnr_per_frame"]) == 8, result
    every_frame = json.loads((tmp_path / "run" / "psnr_per_frame.json").read_text())
    assert len(every_frame) == 16
    assert [every_frame[k] for k in result["scored_frames"]] == pytest.approx(result["psnr_per_frame"], abs=1e-3)


def check_viewer_scene(run_dir, target):
    """The viewer's video panels: frame 3 of the field and of the clip at the centre of pixel (12, 16)."""
    from unittest.mock import MagicMock

    from nfield.render.cameras import look_at
    from nfield.runs.single import load_run
    from nfield.viewer.cameras import ViewCamera
    from nfield.viewer.displays import SignalDisplay

    run = load_run(run_dir, "cpu", data=True)
    scene = SignalDisplay(run.task, run.config)
    scene.frame = MagicMock(value=3)
    u, v = 2 * 16.5 / WIDTH - 1, 2 * 12.5 / HEIGHT - 1
    x, y = u * scene.half[0], -v * scene.half[1]

    def centre_pixel(panel):
        c2w = look_at((x + panel * scene.pitch, y, 3.0), (x + panel * scene.pitch, y, 0.0), up=(0.0, 1.0, 0.0))
        return scene.render_rows(ViewCamera(c2w, 0.01, 3, 3), 0, 3)[1, 1]

    with torch.no_grad():
        field = run.task.model(torch.tensor([[u, v, 2 * 3.5 / FRAMES - 1]])).clamp(0, 1)[0]
    np.testing.assert_allclose(centre_pixel(0), field.numpy(), atol=1e-5)
    np.testing.assert_allclose(centre_pixel(1), target.frames[3, 12, 16].float().numpy() / 255, atol=1e-6)
