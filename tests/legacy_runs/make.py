"""Write one small run directory of every kind with the installed nfield, for the load and resume
tests (tests/test_legacy_runs.py). Run from this folder: ``python make.py VERSION``; it writes
``VERSION/`` (inputs/ and one run per kind). The runs are kept as test data: every later release
must load them, render and evaluate them, and resume the resumable ones. Each folder was written by
this script as it stood in that release (its git history); it is kept in the current release's
flags and names, ready to write the next folder.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository's scenes package

import imageio.v3 as iio  # noqa: E402
import soundfile  # noqa: E402
import torch  # noqa: E402
import trimesh  # noqa: E402

from nfield.cli import main  # noqa: E402


def run(*argv, keep: bool = True) -> None:
    extra = ("--keep-checkpoints", 1) if keep else ()
    status = main([str(a) for a in (*argv, "--no-progress", "--device", "cpu", *extra)])
    if status != 0:
        raise SystemExit(f"failed: {argv}")


def inputs(folder: Path) -> None:
    """The signals the runs fit: an image, a pair of images, a chirp, a clip, a sphere and a NeRF scene."""
    from scenes.synthetic import generate

    folder.mkdir(parents=True)
    y, x = np.mgrid[0:24, 0:32] / 24.0
    image = np.stack([np.sin(6 * x), np.cos(5 * y), x * y], -1) * 0.5 + 0.5
    iio.imwrite(folder / "pattern.png", (image * 255).astype(np.uint8))
    (folder / "pair").mkdir()
    iio.imwrite(folder / "pair" / "a.png", (image * 255).astype(np.uint8))
    iio.imwrite(folder / "pair" / "b.png", (image[::-1] * 255).astype(np.uint8))
    t = np.arange(2000) / 8000.0
    soundfile.write(folder / "chirp.wav", 0.5 * np.sin(2 * np.pi * (300 + 800 * t) * t), 8000)
    frames = [(np.roll(image, 3 * i, axis=1) * 255).astype(np.uint8) for i in range(4)]
    iio.imwrite(folder / "clip.gif", np.stack(frames), loop=0)
    trimesh.creation.icosphere(subdivisions=2, radius=0.6).export(folder / "sphere.obj")
    generate("primitives", folder / "primitives", size=16, n_train=8, n_val=1, n_test=2)


#: Each run: its directory, then the command that writes it (from inside the version folder).
SIGNAL_RUNS = {
    "image": "fit-image inputs/pattern.png --model siren --n-neurons 16 --n-hidden-layers 1 --steps 20",
    "image-pins": "fit-image inputs/pattern.png --model pins --n-lods 2 --n-neurons 16 --steps 20",
    "collection": "fit-image inputs/pair --model siren --n-neurons 16 --n-hidden-layers 1 --steps 20",
    "audio": "fit-audio inputs/chirp.wav --n-neurons 16 --n-hidden-layers 1 --steps 20",
    "video": "fit-video inputs/clip.gif --model siren --n-neurons 16 --n-hidden-layers 1 --steps 20",
    "sdf": "fit-sdf inputs/sphere.obj --n-lods 2 --feature-dim 4 --batch-size 512 --pool-size 4096 --mesh-resolution 24"
    " --steps 20",
}
_NERF = "train-nerf inputs/primitives --batch-rays 128 --steps 20 --eval-every 0 --eval-views 1 --render-views 1"
NERF_RUNS = {
    "nerf-ngp": f"{_NERF} --n-levels 4 --log2-hashmap-size 10 --occupancy-resolution 16 --occupancy-warmup 8 --steps-per-ray 32",
    "nerf-kilonerf": f"{_NERF} --model kilonerf --longest-axis-cells 2 --occupancy-resolution 16",
    "nerf-vanilla": f"{_NERF} --model vanilla --n-samples 8 --n-importance 8",  # its preset narrowed below
}
DISTILLED = "distill nerf-ngp --longest-axis-cells 2 --n-neurons 8 --distill-steps 10 --finetune-steps 10 --batch-points 256"


def runs(version: Path) -> None:
    """Every kind of run, written from inside `version` so that the recorded paths are relative."""
    from nfield.fields.radiance import VanillaNeRFConfig
    from nfield.networks import MLPConfig
    from nfield.presets import nerf as nerf_presets

    os.chdir(version)
    for out, command in {**SIGNAL_RUNS, **NERF_RUNS}.items():
        vanilla = nerf_presets.NERF_PRESETS["vanilla"]
        if out == "nerf-vanilla":  # no flag sets the vanilla NeRF's width: its preset at a test's size
            trunk, color = MLPConfig(n_neurons=16, n_hidden_layers=3), MLPConfig(16, 1, output_activation="sigmoid")
            narrow = VanillaNeRFConfig(position_frequencies=4, direction_frequencies=2, trunk=trunk, skip_layer=1, color=color)
            nerf_presets.NERF_PRESETS["vanilla"] = dataclasses.replace(vanilla, field=narrow)
        run(*command.split(), "--out", out)
        nerf_presets.NERF_PRESETS["vanilla"] = vanilla
    run(*DISTILLED.split(), "--out", "nerf-distilled", keep=False)


if __name__ == "__main__":
    version = Path(sys.argv[1])
    if version.exists():
        shutil.rmtree(version)
    os.environ.setdefault("NFIELD_CURVES", "0")
    torch.set_num_threads(2)
    inputs(version / "inputs")
    here = version.resolve()
    runs(version)
    for path in here.rglob("*.json*"):  # paths the runs resolved (a scene, a teacher) made relative to `version`
        path.write_text(path.read_text().replace(f'"{here}/', '"'))
