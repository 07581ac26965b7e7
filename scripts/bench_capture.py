"""From photos to a scene: `nfield process-data` on a capture that has reference poses.

Runs process-data on a folder of photos (the phases timed: features, matching, mapping, writing
the scene) and compares the poses it finds with a reference transforms.json of the same photos
(matched by file name) after a similarity alignment: rotation errors in degrees and camera-centre
errors as a share of the capture's extent (`nfield.data.capture.compare_poses`). Prints a table and
writes JSON.

    python scripts/bench_capture.py PHOTOS_DIR REFERENCE_TRANSFORMS_JSON --out results/bench_capture_cpu.json
    # the fox: python scripts/bench_capture.py ../shared/data/nerf/fox/images ../shared/data/nerf/fox/transforms.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from bench_report import report_header, write_report

from nfield.data.capture import CaptureOptions, compare_poses, process_capture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", type=Path, help="a folder of photos")
    parser.add_argument("reference", type=Path, help="a transforms.json with the photos' reference poses")
    parser.add_argument("--scene", type=Path, default=None, help="where to write the scene (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=Path("bench_capture.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        scene = args.scene or Path(tmp) / "scene"
        summary = process_capture(args.photos, scene, CaptureOptions(downscales=(), overwrite=True))
        ours = json.loads((scene / "transforms.json").read_text())
    reference = json.loads(args.reference.read_text())
    by_name = {Path(frame["file_path"]).name: np.array(frame["transform_matrix"]) for frame in reference["frames"]}
    names = [Path(frame["file_path"]).name for frame in ours["frames"] if Path(frame["file_path"]).name in by_name]
    poses = np.array([frame["transform_matrix"] for frame in ours["frames"] if Path(frame["file_path"]).name in by_name])
    rotation, centre = compare_poses(poses, np.stack([by_name[name] for name in names]))
    errors = {
        "compared": len(names),
        "rotation_deg_median": float(np.median(rotation)),
        "rotation_deg_max": float(rotation.max()),
        "centre_share_median": float(np.median(centre)),
        "centre_share_max": float(centre.max()),
    }
    report = report_header(torch.device("cpu"), photos=str(args.photos), reference=str(args.reference), **summary, errors=errors)
    write_report(args.out, report)

    print(f"{'registered':>12} {'reproj px':>10} {'points':>8} " + " ".join(f"{phase:>9}" for phase in summary["seconds"]))
    error = summary["mean_reprojection_error"]
    counts = f"{summary['registered']:>5} of {summary['images']:<4} {error:>10.3f} {summary['points']:>8,}"
    print(counts + " " + " ".join(f"{seconds:>8.1f}s" for seconds in summary["seconds"].values()))
    print(
        f"against the reference ({len(names)} cameras): rotation median {errors['rotation_deg_median']:.3f} deg "
        f"(max {errors['rotation_deg_max']:.3f}), centre median {100 * errors['centre_share_median']:.3f} % of the extent "
        f"(max {100 * errors['centre_share_max']:.3f} %)"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
