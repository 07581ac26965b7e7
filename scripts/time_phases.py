"""What a person watching a command sees, and when: its stderr timed line by line, and its phases.

Runs a command, reads its stderr as it arrives (progress bars redraw with carriage returns: each
redraw is a line here, seen when the next one arrives) and prints every line with the seconds since
the start, then a table of the phases: each labelled bar (the text before its first ":") from the
first to the last time it was drawn, and the longest stretch with nothing new on stderr. The JSON
holds the lines, the phases, the exit status and stdout's last line (a training command's metrics).

    python scripts/time_phases.py --out results/phases.json -- nfield train-nerf SCENE --steps 150
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench_report import write_report

#: A progress bar's redraw: "label: 42%|####      | 21/50 [...]" or "label: 0.00ray [...]".
BAR = re.compile(r"^(?P<label>[^:|]+?):\s+(\d+%\||[\d.]+[kMG]?\w*\s*\[)")


def timed_lines(command: list[str]) -> tuple[list[tuple[float, str]], int, str]:
    """((seconds, line) of the command's stderr in order, its exit status, its stdout)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE)
    stdout: list[bytes] = []
    reader = threading.Thread(target=lambda: stdout.append(process.stdout.read()))
    reader.start()
    lines, pending = [], b""
    while chunk := process.stderr.read1(4096):
        pending += chunk
        *complete, pending = re.split(rb"[\r\n]", pending)
        now = round(time.perf_counter() - started, 1)
        lines += [(now, text) for text in (c.decode(errors="replace").strip() for c in complete) if text]
    status = process.wait()
    reader.join()
    if pending.strip():
        lines.append((round(time.perf_counter() - started, 1), pending.decode(errors="replace").strip()))
    lines.append((round(time.perf_counter() - started, 1), f"(exit {status})"))
    return lines, status, b"".join(stdout).decode(errors="replace")


def phases(lines: list[tuple[float, str]]) -> list[dict]:
    """Each bar's label with the first and last time it was drawn, in order of appearance."""
    found: dict[str, dict] = {}
    for seconds, text in lines:
        match = BAR.match(text)
        if match:
            entry = found.setdefault(match["label"], {"phase": match["label"], "first_s": seconds})
            entry["last_s"] = seconds
            entry["last"] = text
    return list(found.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="JSON report")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to time after --")
    lines, status, stdout = timed_lines(command)
    for seconds, text in lines:
        print(f"{seconds:8.1f}  {text}")
    quiet = max(((b[0] - a[0], a[0]) for a, b in zip(lines, lines[1:])), default=(0.0, 0.0))
    print("\n| phase | first drawn (s) | last drawn (s) | its last state |\n|---|---:|---:|---|")
    for phase in phases(lines):
        print(f"| {phase['phase']} | {phase['first_s']} | {phase['last_s']} | {phase['last']} |")
    print(f"\nlongest stretch with nothing new on stderr: {quiet[0]:.1f} s from {quiet[1]:.1f} s; exit {status}")
    report = {"command": " ".join(command), "exit": status, "seconds": lines[-1][0], "phases": phases(lines)}
    report.update(longest_quiet_s=round(quiet[0], 1), quiet_from_s=quiet[1], lines=lines)
    report["stdout_last_line"] = (stdout.strip().splitlines() or [""])[-1]
    write_report(args.out, report)
    sys.exit(status)


if __name__ == "__main__":
    main()
