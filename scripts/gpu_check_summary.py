"""The summary of a gpu_check.sh run: the headline figures against their targets first, then one line per step.

Reads OUT_DIR/steps.tsv (written by gpu_check.sh), the tests' JUnit XML files and the benchmarks'
JSON files, prints the summary and writes OUT_DIR/summary.json and OUT_DIR/summary.txt. Exit
status 0 when every step that ran passed, 1 otherwise. The headline: ngp's held-out PSNR/SSIM at
15/60/180 s on the 800x800 scene (target >= 33 dB within 3 minutes), its rays/s and 800x800
render fps; NGLOD sphere tracing at 1280x720 (target >= 60 fps on an H100, fused kernel); the hash
grid's forward+backward at 2^20 points (target >= 300 M/s on an H100); the fused MLP probe's verdict
and throughput (target >= 900 M/s); the live viewer's cost (target <= 10 %). Targets are goals,
not part of the exit status.

    python scripts/gpu_check_summary.py OUT_DIR [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any


def load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def pytest_line(xml: Path) -> str:
    """'N passed, F failed, E errors, S skipped (failed names)' from a JUnit XML file."""
    try:
        root = ElementTree.parse(xml).getroot()
    except (OSError, ElementTree.ParseError):
        return f"no {xml.name}"
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return f"no test suite in {xml.name}"
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    line = f"{passed} passed, {counts['failures']} failed, {counts['errors']} errors, {counts['skipped']} skipped"
    failed = [
        case.get("name") for case in suite.iter("testcase") if case.find("failure") is not None or case.find("error") is not None
    ]
    return line + (f" ({', '.join(failed[:6])})" if failed else "")


def probe_lines(report: dict[str, Any]) -> list[str]:
    """The fused MLP probe: one line per launch configuration, then the verdict."""
    lines = []
    for r in report.get("results", []):
        if r.get("ok"):
            timing = f", {r['rows_per_second'] / 1e6:,.0f} M rows/s" if r.get("rows_per_second") else ""
            memcheck = f", memcheck {r['memcheck']}" if "memcheck" in r else ""
            lines.append(f"{r['variant']}: ok (errors {r['forward_error']:.1e}/{r['backward_error']:.1e}{timing}{memcheck})")
        else:
            lines.append(f"{r['variant']}: FAILED: {r.get('error', '')}"[:160])
    verdict = report.get("verdict")
    lines.append(f"verdict: {verdict}" if verdict else "verdict: no configuration passed (the fused MLP stays off)")
    return lines


def tracing_lines(report: dict[str, Any]) -> list[str]:
    out = []
    for r in report.get("results", []):
        counts = f", {r['launches_per_frame']} launches, {r['syncs_per_frame']} syncs" if "launches_per_frame" in r else ""
        agreement = f", IoU {r['hit_iou']:.4f}" if "hit_iou" in r else ""
        out.append(f"{r['path']}: {r['fps']:.2f} fps, {r['evaluations_per_ray']:.2f} evaluations/ray{counts}{agreement}")
    return out


def kernel_lines(report: dict[str, Any]) -> tuple[list[str], dict[str, float]]:
    rows = report.get("kernels", [])
    lines, measured = [], {}
    for component in dict.fromkeys(r["component"] for r in rows):
        for mode in ("forward", "forward+backward"):
            picked = [r for r in rows if r["component"] == component and r["mode"] == mode]
            if not picked:
                continue
            largest = max(r["n"] for r in picked)
            at_largest = [r for r in picked if r["n"] == largest]
            shown = ", ".join(f"{r['backend']} {r['per_second'] / 1e6:,.1f} M/s (x{r['speedup']:.2f})" for r in at_largest)
            lines.append(f"{component} {mode} at {largest:,}: {shown}")
        for r in rows:
            if r["component"] == component and r["mode"] == "forward+backward" and r["n"] == 2**20:
                measured[f"{component}|{r['backend']}"] = r["per_second"]
    step = report.get("nerf_step")
    if step:
        profiles = ", ".join(f"{p['label']} {p['step_ms']:.2f} ms" for p in step["profiles"])
        lines.append(f"ngp step on {step['scene']}: {profiles} (x{step['speedup']:.2f})")
    return lines, measured


def bench_lines(name: str, report: dict[str, Any]) -> list[str]:
    if name == "image":
        out = []
        for r in report.get("results", []):
            psnr = r.get("psnr")
            last = list(psnr.values())[-1] if isinstance(psnr, dict) and psnr else psnr
            out.append(f"{r.get('image', '')} {r['model']}: {last:.2f} dB, {r.get('ms_per_step', 0):.2f} ms/step")
        return out[:12]
    if name == "sdf":
        out = [
            f"{r['model']} lod {r.get('lod')}: chamfer {r['chamfer_l1']:.5f}, {r.get('fps', 0):.1f} fps"
            for r in report.get("results", [])
        ]
        return out[-8:]
    if name == "nerf":
        out = []
        for r in report.get("results", []):
            curve = r.get("curve", [])
            points = ", ".join(f"{c['psnr']:.2f} dB@{c['seconds']}s" for c in curve)
            out.append(f"{r['scene']} {r['model']}: {points}; {r.get('rays_per_second', 0):,.0f} rays/s")
        for b in report.get("baseline", []):
            out.append(f"{b['scene']} ngp/vanilla rays/s x{b['rays_per_second_ratio']:.2f}")
        return out
    if name == "kilonerf":
        fps, ratio = report.get("fps", {}), report.get("fps_ratio", 0)
        return [
            f"KiloNeRF {fps.get('kilonerf', 0):.1f} fps vs teacher {fps.get('teacher', 0):.1f} (x{ratio:.2f}); "
            f"PSNR gap {report.get('psnr_gap_db', float('nan')):+.2f} dB"
        ]
    if name == "families":
        out = [
            f"{c['claimant']} vs {c['baseline']}: holds on {c['holds_on']}/{c['of']}, {c['mean_difference_db']:+.2f} dB"
            for c in report.get("claims", [])
        ]
        return [f"{len(report.get('results', []))} runs at {report.get('budget', 0):,} parameters", *out]
    if name == "papers":
        return [
            f"{r['key']}: {r['value']:.2f} dB ({r['metric']}), {r['train_seconds']:.0f} s"
            if "value" in r
            else f"{r['key']}: {r['error']}"
            for r in report.get("results", [])
        ]
    if name == "viewer":
        return [
            f"{r['kind']} {r['model']} with a {r['page']} page: training {r['slowdown_percent']:+.1f}% slower, "
            f"{r['frames_drawn']} frames, same metrics: {r['same_final_metrics']}"
            for r in report.get("runs", [])
        ]
    if name == "scale":
        out = [
            f"{r['model']} x{r['signals']} at {r['size']} px: stacked {r['speedup_wall']:.2f}x the signals/s of one by one "
            f"({r['speedup_train']:.2f}x in training)"
            for r in report.get("many_signals", [])
        ]
        parallel = report.get("data_parallel", {})
        if "speedup" in parallel:
            out.append(f"data-parallel {parallel['model']}: 2 processes {parallel['speedup']:.2f}x the steps/s of 1")
        elif "skipped" in parallel:
            out.append(f"data-parallel: skipped ({parallel['skipped']})")
        return out
    return []


def headline(out_dir: Path, measured: dict[str, float]) -> list[str]:
    """The headline table: what was measured (or 'not measured'), and the target."""
    rows = []
    nerf = load(out_dir / "bench_nerf.json") or {}
    ngp = next((r for r in nerf.get("results", []) if r.get("model") == "ngp" and "800x800" in str(r.get("scene", ""))), None)
    if ngp and ngp.get("curve"):
        points = " / ".join(f"{c['psnr']:.2f}" for c in ngp["curve"])
        seconds = "/".join(str(c["seconds"]) for c in ngp["curve"])
        ssim = " / ".join(f"{c['ssim']:.3f}" for c in ngp["curve"])
        best = max(c["psnr"] for c in ngp["curve"] if c["seconds"] <= 180)
        rows.append((f"ngp 800x800 PSNR @{seconds} s", f"{points} dB (SSIM {ssim})", ">= 33 dB within 3 min", best >= 33))
        rows.append(("ngp training", f"{ngp.get('rays_per_second', 0) / 1e6:.2f} M rays/s", "", None))
        fps = f"{ngp['fps']:.2f} fps" if "fps" in ngp else "not measured (stopped before the render)"
        rows.append(("ngp 800x800 render", fps, "", None))
    else:
        rows.append(("ngp 800x800 PSNR @15/60/180 s", "not measured", ">= 33 dB within 3 min", None))
    tracing = load(out_dir / "bench_sphere_tracing.json") or {}
    frame = "x".join(map(str, (tracing.get("scale") or {}).get("frame", (1280, 720))))
    fused = {r["path"]: r for r in tracing.get("results", [])}
    if "triton" in fused:
        row = fused["triton"]
        rows.append(
            (f"NGLOD {frame} (fused kernel)", f"{row['fps']:.1f} fps", ">= 60 fps at 1280x720 on an H100", row["fps"] >= 60)
        )
    else:
        rows.append(("NGLOD 1280x720 (fused kernel)", "not measured", ">= 60 fps at 1280x720 on an H100", None))
    for path in ("torch", "previous"):
        if path in fused:
            rows.append((f"NGLOD {frame} ({path} path)", f"{fused[path]['fps']:.2f} fps", "", None))
    for label, key, goal in (
        ("hash grid fwd+bwd at 2^20", "hash grid|triton", 300e6),
        ("tiny MLP fwd+bwd at 2^20", "tiny MLP 64x2|triton", 900e6),
    ):
        value = measured.get(key)
        shown = "not measured" if value is None else f"{value / 1e6:,.0f} M/s"
        rows.append((label, shown, f">= {goal / 1e6:.0f} M/s", None if value is None else value >= goal))
    probe = load(out_dir / "mlp_probe.json")
    if probe is None:
        rows.append(("fused MLP probe", "not run", "a configuration that passes", None))
    else:
        rows.append(
            (
                "fused MLP probe",
                f"verdict: {probe.get('verdict') or 'none passed'}",
                "a configuration that passes",
                bool(probe.get("verdict")),
            )
        )
    viewer = load(out_dir / "bench_viewer.json") or {}
    slowdowns = [r["slowdown_percent"] for r in viewer.get("runs", [])]
    worst = max(slowdowns) if slowdowns else None
    rows.append(
        (
            "live viewer slows training",
            "not measured" if worst is None else f"{worst:+.1f} %",
            "<= 10 %",
            None if worst is None else worst <= 10,
        )
    )
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"{'headline':<{width}}{'measured':<46}{'target':<36}"]
    for name, value, goal, met in rows:
        state = "" if met is None or not goal else ("  met" if met else "  missed")
        lines.append(f"{name:<{width}}{value:<46}{goal:<36}{state}".rstrip())
    return lines


def sanitizer_line(log: Path) -> str:
    """compute-sanitizer's error summary and the kernel checks that passed, from the step's log."""
    if not log.is_file():
        return "no log"
    lines = log.read_text(errors="replace").splitlines()
    checks = [line.split(":")[0] for line in lines if ": ok:" in line]
    summary = next((line.strip("= ").strip() for line in reversed(lines) if "ERROR SUMMARY" in line), None)
    return f"{summary or 'no sanitizer summary'}; checks passed: {', '.join(checks) or 'none'}"


def step_details(out_dir: Path, name: str) -> tuple[list[str], dict[str, float]]:
    """The headline lines of one step (and, for the kernel step, the measured throughputs)."""
    if name.startswith("tests-"):
        return [pytest_line(out_dir / f"{name}.xml")], {}
    if name == "sanitizer":
        return [sanitizer_line(out_dir / "sanitizer.log")], {}
    if name == "mlp":
        report = load(out_dir / "mlp_probe.json")
        return (probe_lines(report) if report else ["no JSON written"]), {}
    file = {"sdf": "bench_sphere_tracing.json", "papers": "reproduce_papers.json"}.get(name, f"bench_{name}.json")
    report = load(out_dir / file)
    if report is None:
        return ["no JSON written"], {}
    if name == "kernels":
        return kernel_lines(report)
    if name == "sdf":
        return tracing_lines(report), {}
    return bench_lines(name, report), {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    out_dir = args.out_dir
    steps = []
    if (out_dir / "steps.tsv").is_file():
        for line in (out_dir / "steps.tsv").read_text().splitlines():
            name, result, seconds, limit = line.split("\t")
            steps.append({"step": name, "result": result, "seconds": int(seconds), "limit": int(limit)})
    summary: dict[str, Any] = {"dry_run": args.dry_run, "steps": steps, "details": {}}
    measured: dict[str, float] = {}
    details = {}
    for step in steps:
        if step["result"] != "not run":
            details[step["step"]], found = step_details(out_dir, step["step"])
            measured.update(found)
    title = f"gpu_check{' (dry run: CPU, tiny sizes, numbers meaningless)' if args.dry_run else ''}"
    goals = headline(out_dir, measured)
    lines = [title, "", *goals, ""]
    lines.append(f"{'step':<24}{'result':<9}{'seconds':>8}{'limit':>7}  details")
    lines.append("-" * 110)
    for step in steps:
        name = step["step"]
        first, *rest = details.get(name) or [""]
        summary["details"][name] = details.get(name, [])
        lines.append(f"{name:<24}{step['result']:<9}{step['seconds']:>8}{step['limit']:>7}  {first}")
        lines += [f"{'':<48}  {line}" for line in rest]
    not_run = [step["step"] for step in steps if step["result"] == "not run"]
    if not_run:
        lines += ["", f"not run within the budget: {', '.join(not_run)}; finish with --only {','.join(not_run)}"]
    summary["headline"] = goals
    text = "\n".join(lines)
    print(text)
    (out_dir / "summary.txt").write_text(text + "\n")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    ran = [step for step in steps if step["result"] != "not run"]
    return 0 if ran and all(step["result"] == "pass" for step in ran) else 1


if __name__ == "__main__":
    sys.exit(main())
