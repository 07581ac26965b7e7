"""The summary of a gpu_check.sh run: one table of steps and headline numbers, checked against the targets.

Reads OUT_DIR/steps.tsv (written by gpu_check.sh), pytest.xml and the benchmarks' JSON files,
prints the table and writes OUT_DIR/summary.json and OUT_DIR/summary.txt. Exit status 0 when every
step passed, 1 otherwise. The targets (hash grid forward+backward >= 300 M points/s at 2^20, tiny
MLP forward+backward >= 900 M/s, ngp >= 33 dB on the 800x800 scene within 3 minutes, the live
viewer slowing training by at most 10 %) are reported
as met / missed / not measured; they are goals, not part of the exit status.

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


def pytest_line(out_dir: Path) -> str:
    try:
        root = ElementTree.parse(out_dir / "pytest.xml").getroot()
    except (OSError, ElementTree.ParseError):
        return "no pytest.xml"
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return "no test suite in pytest.xml"
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    line = f"{passed} passed, {counts['failures']} failed, {counts['errors']} errors, {counts['skipped']} skipped"
    failed = [
        case.get("name") for case in suite.iter("testcase") if case.find("failure") is not None or case.find("error") is not None
    ]
    return line + (f" ({', '.join(failed[:6])})" if failed else "")


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


def targets(measured: dict[str, float], nerf: dict[str, Any] | None, viewer: dict[str, Any] | None = None) -> list[str]:
    lines = []
    for label, key, goal in (
        ("hash grid fwd+bwd >= 300 M/s at 2^20", "hash grid|triton", 300e6),
        ("tiny MLP fwd+bwd >= 900 M/s at 2^20", "tiny MLP 64x2|triton", 900e6),
    ):
        value = measured.get(key)
        state = "not measured" if value is None else ("met" if value >= goal else "missed")
        lines.append(f"{label}: {state}" + ("" if value is None else f" ({value / 1e6:,.0f} M/s)"))
    best = None
    for r in (nerf or {}).get("results", []):
        if r.get("model") == "ngp" and str(r.get("scene", "")).startswith("primitives 800x800"):
            within = [c["psnr"] for c in r.get("curve", []) if c["seconds"] <= 180]
            best = max(within) if within else best
    state = "not measured" if best is None else ("met" if best >= 33 else "missed at this scale's checkpoints")
    lines.append(f"ngp >= 33 dB within 3 min on 800x800: {state}" + ("" if best is None else f" ({best:.2f} dB)"))
    slowdowns = [r["slowdown_percent"] for r in (viewer or {}).get("runs", [])]
    worst = max(slowdowns) if slowdowns else None
    state = "not measured" if worst is None else ("met" if worst <= 10 else "missed")
    lines.append(f"live viewer slows training <= 10%: {state}" + ("" if worst is None else f" (worst {worst:+.1f}%)"))
    return lines


def sanitizer_line(log: Path) -> str:
    """compute-sanitizer's error summary and the kernel checks that passed, from the step's log."""
    if not log.is_file():
        return "no log"
    lines = log.read_text(errors="replace").splitlines()
    checks = [line.split(":")[0] for line in lines if ": ok:" in line]
    summary = next((line.strip("= ").strip() for line in reversed(lines) if "ERROR SUMMARY" in line), None)
    return f"{summary or 'no sanitizer summary'}; checks passed: {', '.join(checks) or 'none'}"


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
    lines = [f"gpu_check{' (dry run: CPU, tiny sizes, numbers meaningless)' if args.dry_run else ''}", ""]
    lines.append(f"{'step':<10}{'result':<9}{'seconds':>8}{'limit':>7}  headline")
    lines.append("-" * 100)
    for step in steps:
        name = step["step"]
        if name == "pytest":
            details = [pytest_line(out_dir)]
        elif name == "sanitizer":
            details = [sanitizer_line(out_dir / "sanitizer.log")]
        else:
            report = load(out_dir / f"bench_{name}.json")
            if report is None:
                details = ["no JSON written"]
            elif name == "kernels":
                details, measured = kernel_lines(report)
            else:
                details = bench_lines(name, report)
        summary["details"][name] = details
        first, *rest = details or [""]
        lines.append(f"{name:<10}{step['result']:<9}{step['seconds']:>8}{step['limit']:>7}  {first}")
        lines += [f"{'':<34}  {line}" for line in rest]
    goals = targets(measured, load(out_dir / "bench_nerf.json"), load(out_dir / "bench_viewer.json"))
    lines += ["", "targets:"] + [f"  {line}" for line in goals]
    summary["targets"] = goals
    text = "\n".join(lines)
    print(text)
    (out_dir / "summary.txt").write_text(text + "\n")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    ok = bool(steps) and all(step["result"] == "pass" for step in steps)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
