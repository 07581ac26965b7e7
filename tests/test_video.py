"""Videos through imageio-ffmpeg, and PNG frames with one line of explanation when its ffmpeg binary is missing."""

import imageio.v3 as iio
import numpy as np
import pytest

from nfield.video import write_video

# a core dependency; only a bare GPU machine running the gpu-marked tests lacks it
imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")


def _frames(n=5, height=12, width=16):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, height, width, 3), dtype=np.uint8)


def _no_ffmpeg():
    raise RuntimeError("No ffmpeg exe could be found. Install ffmpeg on your system, or set IMAGEIO_FFMPEG_EXE.")


def test_frames_become_a_playable_mp4(tmp_path, capsys):
    frames = _frames()
    assert write_video(tmp_path / "sub" / "v.mp4", frames, fps=10) == tmp_path / "sub" / "v.mp4"
    assert iio.imread(tmp_path / "sub" / "v.mp4", plugin="FFMPEG", index=None).shape == frames.shape
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("missing", ["no binary", "bad IMAGEIO_FFMPEG_EXE"])
def test_without_ffmpeg_the_frames_are_written_as_pngs_with_one_line_saying_so(tmp_path, capsys, monkeypatch, missing):
    if missing == "no binary":
        monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", _no_ffmpeg)
    else:
        monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(tmp_path / "nowhere" / "ffmpeg"))
    (tmp_path / "v_frames").mkdir()
    (tmp_path / "v_frames" / "frame_0007.png").write_bytes(b"from an earlier, longer render")
    frames = _frames()
    folder = write_video(tmp_path / "v.mp4", frames, fps=10)
    assert folder == tmp_path / "v_frames" and not (tmp_path / "v.mp4").exists()
    written = sorted(folder.iterdir())
    assert [p.name for p in written] == [f"frame_{i:04d}.png" for i in range(len(frames))]
    assert all(np.array_equal(iio.imread(p), frame) for p, frame in zip(written, frames))  # lossless
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "PNG frames" in err[0] and "pip install imageio-ffmpeg" in err[0] and "IMAGEIO_FFMPEG_EXE" in err[0]
