import json
import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))
# Runs skip drawing curves.png (about 0.3 s each, some 200 runs): tests/test_plots.py turns it back on
# and checks the curves every run writes. Subprocesses the tests start inherit the setting.
os.environ["NFIELD_CURVES"] = "0"

# One small instant-ngp run on the generated "primitives" scene (32x32 views), trained once per test
# session from the CLI and shared by the NeRF task, geometry and distillation tests: about 20 s on 2 cores.
NGP_RUN = ("--n-levels", 8, "--log2-hashmap-size", 14, "--grid-resolution", 32, "--grid-warmup", 32, "--steps-per-ray", 64)
NGP_RUN += ("--batch-rays", 256, "--steps", 250, "--eval-every", 0, "--no-progress", "--device", "cpu")
BUNNY = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sdf" / "bunny.obj"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ngp_run(tmp_path_factory):
    """The run directory of an ngp field trained 250 steps on primitives (32 train, 1 val, 3 test views)."""
    from nfield.cli import main
    from scenes.synthetic import generate

    scene = generate("primitives", tmp_path_factory.mktemp("scene") / "primitives", size=32, n_train=32, n_val=1, n_test=3)
    out = tmp_path_factory.mktemp("ngp") / "ngp"
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, os.cpu_count() or 1))  # whichever module asks first, whatever its thread setting
    try:
        assert main([str(a) for a in ("train-nerf", scene, *NGP_RUN, "--out", out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="session")
def bunny_run(tmp_path_factory):
    """A short NGLOD fit of the bunny (4 LODs, 16 features, 120 steps; the SDF acceptance run), shared
    by the fit-sdf and NGLOD-tracing tests: (its run directory, its metrics.jsonl lines)."""
    from nfield.cli import main

    if not BUNNY.exists():
        pytest.skip("shared data not available")
    out = tmp_path_factory.mktemp("sdf") / "bunny"
    argv = ("fit-sdf", BUNNY, "--lods", 4, "--feature-dim", 16, "--batch-size", 4096, "--steps", 120, "--mesh-resolution", 96)
    assert main([str(a) for a in (*argv, "--out", out, "--no-progress")]) == 0
    return out, [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
