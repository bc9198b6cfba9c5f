"""Run a command and report its wall time and peak memory over the whole process tree.

``python -m verl_flexrec.cpu.measure --out stats.json -- CMD ARGS...``

A verl job is many processes (driver, Ray's GCS/raylet, TaskRunner, workers, rollout server,
TransferQueue units), so the peak RSS of one process says little. Every ``interval`` seconds
this sums the resident set size of the command and all its descendants; the report holds the
peak of that sum (``peak_tree_rss_mib``, an upper bound: pages shared between processes count
once per process), the peak of the largest single process, the wall time and the exit code.
The exit code of this tool is the command's.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil

from ..atomic import write_text_atomic
from ..paths import portable_paths_in


def tree_rss(root: psutil.Process) -> tuple[int, int]:
    """(sum of RSS, largest RSS) in bytes over ``root`` and its descendants still alive."""
    total = largest = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    for proc in procs:
        try:
            rss = proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += rss
        largest = max(largest, rss)
    return total, largest


def run_measured(cmd: list[str], interval: float = 0.5, timeout: float | None = None, **popen_kwargs) -> dict:
    """Run ``cmd`` to completion; return wall time, peaks and exit code.

    With ``timeout``, the command's process group is killed when it runs longer (exit code -9).
    """
    start = time.monotonic()
    proc = subprocess.Popen(cmd, start_new_session=True, **popen_kwargs)
    root = psutil.Process(proc.pid)
    peaks = {"total": 0, "largest": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            total, largest = tree_rss(root)
            peaks["total"] = max(peaks["total"], total)
            peaks["largest"] = max(peaks["largest"], largest)
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            returncode = proc.wait()
    finally:
        done.set()
        sampler.join()
    return {
        "returncode": returncode,
        "wall_s": round(time.monotonic() - start, 1),
        "peak_tree_rss_mib": round(peaks["total"] / 2**20),
        "peak_process_rss_mib": round(peaks["largest"] / 2**20),
        "cmd": cmd,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the report as JSON here (also printed)")
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command given")
    report = run_measured(cmd, interval=args.interval)
    print(json.dumps(report, indent=1), file=sys.stderr)
    if args.out:
        # the file holds the command's paths relative to its own folder, none absolute
        folder = os.path.dirname(os.path.abspath(args.out))
        saved = portable_paths_in(report, folder, [c for c in cmd if os.path.exists(c)])
        write_text_atomic(args.out, json.dumps(saved, indent=1) + "\n")
    return report["returncode"]


if __name__ == "__main__":
    raise SystemExit(main())
