"""The GPU path end to end in Triton's interpreter: training commands on ``--backend triton`` against
the same commands on ``--backend torch``.

Kernel checks (`kernel_checks`) test each kernel alone; the three compile errors of nfield's first
GPU run were each in a kernel those checks had passed, reached by a real run in a way they did
not. Here each run of `RUNS` (``train-nerf``, ``fit-sdf --model hash`` and ``nglod`` with the
eikonal term, ``fit-image --model hash``) goes through the same `nfield.runs.single.train` as the command
twice, in this process, on tiny generated inputs: first with every component on the PyTorch
reference, then with every component forced onto its Triton kernel (``--backend triton``: grid
encodings, the fused MLP, occupancy marching, compositing), which Triton's interpreter runs on
the CPU. The two runs must agree: the loss of every step within the run's relative tolerance,
the final metrics within stated absolute tolerances, and the triton run must have logged the
Triton backend for each component named. Every memory access of every launch is bounds-checked
(`interpreter_bounds`), and with ``--record`` each launch is written down for the sm_90 compile
(`hopper_compile`).

    TRITON_INTERPRET=1 python -m tests.kernels.interpreted_runs [RUN ...] [--record launches.json]

prints one line per run ("NAME: ok: ..." or "NAME: FAIL: ...") and exits 1 when any failed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.kernels import hopper_compile, interpreter_bounds, interpreter_speed
from tests.kernels.kernel_checks import run_each


@dataclass(frozen=True)
class Run:
    """One training run compared across backends: the `RunRequest` that ``nfield <command> ...
    --backend B --device cpu`` builds, with evaluation sizes the command line leaves at their
    defaults made small (the interpreter is slow).

    kind, source: the task and the key of its generated input (see `make_inputs`).
    model, overrides, task_overrides: as on the command line.
    steps: training steps compared; warm_steps: steps trained first on the torch backend, whose
        checkpoint both backends then resume (a hash-grid SDF needs some 30 steps before it has a
        surface to mesh, too many to interpret).
    backends: components whose logged backend must be ``triton`` in the triton run.
    loss_rtol: per-step loss, relative.
    metrics: final metric -> largest absolute difference.
    """

    kind: str
    source: str
    model: str
    steps: int
    backends: tuple[str, ...]
    loss_rtol: float
    metrics: dict[str, float]
    overrides: dict[str, Any] = field(default_factory=dict)
    task_overrides: dict[str, Any] = field(default_factory=dict)
    warm_steps: int = 0


_SDF_SIZES = {"batch_size": 128, "pool_size": 1024, "mesh_resolution": 16, "metric_points": 300, "iou_points": 2048,
              "eval_points": 512, "preview_width": 24, "preview_height": 16}  # fmt: skip
RUNS = {
    # ngp: hash grid, fused MLPs (density and colour), occupancy marching with early stopping, compositing
    # and its backward, the occupancy grid's refresh, the closing evaluation and renders
    "nerf": Run(
        "nerf",
        "scene",
        "ngp",
        steps=3,
        overrides={"grid_resolution": 8, "grid_warmup": 2, "steps_per_ray": 32, "n_levels": 4, "log2_hashmap_size": 10},
        task_overrides={"batch_rays": 32, "eval_views": 1},
        backends=("HashGrid", "MLP", "OccupancyGrid.march", "composite", "render_weights"),
        loss_rtol=1e-3,
        metrics={"psnr": 0.02, "ssim": 0.002},
    ),
    # hash grid + MLP with an eikonal term: the grid kernels' double backward, the fused MLP's
    # second derivatives (through the reference), meshing, metrics and the sphere-traced preview
    "sdf-hash": Run(
        "sdf",
        "mesh",
        "hash",
        steps=2,
        warm_steps=30,
        overrides={"n_levels": 4, "log2_hashmap_size": 10},
        task_overrides={**_SDF_SIZES, "eikonal_weight": 0.1},
        backends=("HashGrid", "MLP"),
        loss_rtol=2e-3,
        metrics={"distance_mae": 5e-4, "iou": 0.03, "chamfer_l1": 0.01},
    ),
    # NGLOD with an eikonal term: octree features (PyTorch) and fused decoders at every LOD, tracing
    "sdf-nglod": Run(
        "sdf",
        "mesh",
        "nglod",
        steps=3,
        overrides={"lods": 3},
        task_overrides={**_SDF_SIZES, "eikonal_weight": 0.1},
        backends=("MLP",),
        loss_rtol=2e-3,
        metrics={"distance_mae": 5e-4, "iou": 0.03, "chamfer_l1": 0.01},
    ),
    "image-hash": Run(
        "image",
        "image",
        "hash",
        steps=4,
        backends=("HashGrid", "MLP"),
        loss_rtol=2e-3,
        metrics={"psnr": 0.05, "ssim": 0.005},
    ),
}


def make_inputs(folder: Path) -> dict[str, str]:
    """The runs' inputs, generated in `folder`: an 8x8 Blender-format scene, a ball mesh and a 24x20 image."""
    import imageio.v3 as iio
    import numpy as np
    import skimage.data
    import skimage.transform
    import trimesh

    from scenes.synthetic import generate

    scene = generate("primitives", folder / "scene", size=8, n_train=4, n_val=1, n_test=1)
    mesh = folder / "ball.obj"
    trimesh.creation.icosphere(subdivisions=2, radius=0.6).export(mesh)
    image = folder / "camera.png"
    pixels = skimage.transform.resize(skimage.data.camera(), (20, 24), anti_aliasing=True)
    iio.imwrite(image, (pixels * 255).round().astype(np.uint8))
    return {"scene": str(scene), "mesh": str(mesh), "image": str(image)}


def run_once(
    run: Run, inputs: dict[str, str], backend: str, out: Path, steps: int, resume: bool = False
) -> tuple[dict, list[dict]]:
    """`run` on `backend` into `out` up to `steps`: (its final metrics, its metrics.jsonl lines)."""
    from nfield.runs.single import RunRequest, train

    train_options = {
        "steps": steps,
        "backend": backend,
        "progress": False,
        "log_every": 1,
        "eval_every": 0,
        "checkpoint_every": 0,
    }
    request = RunRequest(
        run.kind,
        inputs[run.source],
        model=run.model,
        out=out,
        resume=resume,
        device="cpu",
        train=train_options,
        overrides={} if resume else run.overrides,
        task_overrides={} if resume else run.task_overrides,
    )
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        final = train(request)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return final, lines


def compare(name: str, run: Run, folder: Path, inputs: dict[str, str]) -> str:
    """Run `run` on both backends and check that they agree; a one-line summary."""
    started = time.perf_counter()
    torch_dir, triton_dir = folder / f"{name}-torch", folder / f"{name}-triton"
    if run.warm_steps:
        run_once(run, inputs, "torch", torch_dir, run.warm_steps)
        shutil.copytree(torch_dir, triton_dir)
    total = run.warm_steps + run.steps
    want, want_log = run_once(run, inputs, "torch", torch_dir, total, resume=bool(run.warm_steps))
    reference_seconds = time.perf_counter() - started
    got, got_log = run_once(run, inputs, "triton", triton_dir, total, resume=bool(run.warm_steps))
    ran = [line["backends"] for line in got_log if line.get("kind") == "backends"][-1]
    wrong = {component: ran.get(component) for component in run.backends if ran.get(component) != "triton"}
    assert not wrong, f"{name}: components not on triton: {wrong} (ran: {ran})"
    compared = [line for line in want_log if line.get("kind") == "train" and line["step"] > run.warm_steps]
    by_step = {line["step"]: line for line in got_log if line.get("kind") == "train"}
    assert compared and all(line["step"] in by_step for line in compared), f"{name}: training losses missing from a log"
    worst_loss = 0.0
    for line in compared:
        a, b = line["loss"], by_step[line["step"]]["loss"]
        difference = abs(b - a) / max(abs(a), 1e-12)
        assert difference <= run.loss_rtol, (
            f"{name}: step {line['step']} loss {b:.6g} on triton, {a:.6g} on torch ({difference:.2g} relative)"
        )
        worst_loss = max(worst_loss, difference)
    shown = []
    for key, tolerance in run.metrics.items():
        difference = abs(got[key] - want[key])
        assert difference <= tolerance, (
            f"{name}: final {key} {got[key]:.6g} on triton, {want[key]:.6g} on torch (off by {difference:.3g})"
        )
        shown.append(f"{key} {got[key]:.4g} vs {want[key]:.4g}")
    return (
        f"{len(compared)} steps, losses within {worst_loss:.1e} relative; {', '.join(shown)} "
        f"(torch {reference_seconds:.1f} s, triton {time.perf_counter() - started - reference_seconds:.1f} s)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help=f"any of {', '.join(RUNS)} (default all)")
    parser.add_argument("--record", type=Path, help="write each interpreted launch here (see hopper_compile)")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") != "1":
        parser.error("set TRITON_INTERPRET=1 (before Python starts): the triton runs need Triton's interpreter on the CPU")
    unknown = sorted(set(args.runs) - set(RUNS))
    if unknown:
        parser.error(f"unknown runs {unknown}; choose from {', '.join(RUNS)}")
    os.environ.setdefault("NFIELD_CURVES", "0")
    with tempfile.TemporaryDirectory() as temporary, contextlib.ExitStack() as stack:
        folder = Path(temporary)
        inputs = make_inputs(folder)
        if args.record:
            stack.enter_context(hopper_compile.recording(args.record))
        bounds = stack.enter_context(interpreter_bounds.bounds_checked())
        stack.enter_context(interpreter_speed.device_calls_patched_once())
        failed = run_each(args.runs or list(RUNS), lambda name: compare(name, RUNS[name], folder, inputs))
    print(bounds.summary())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
