"""Shared pieces of the tiny CPU job's end-to-end tests: preparing its work folder and reading the
step metrics of verl's console logger."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def prepare(work: Path, sft_steps: int, prepared_env: str, timeout_s: float) -> None:
    """Data, tokenizer and warm-started model into ``work`` (``verl_flexrec.cpu.tiny_setup``, no Ray),
    or a copy of the folder ``$<prepared_env>`` names, made by that command with the same
    ``--sft-steps``: on a shared machine the warm start can then run before taking the Ray lock."""
    ready = os.environ.get(prepared_env)
    if ready:
        shutil.copytree(ready, work, dirs_exist_ok=True)
        return
    setup = subprocess.run([sys.executable, "-m", "verl_flexrec.cpu.tiny_setup", "--workdir", str(work),
                            "--dataset", "ml-1m", "--sft-steps", str(sft_steps)],
                           cwd=REPO, capture_output=True, text=True, timeout=timeout_s, check=False)
    assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]


def step_metrics(log_text: str) -> dict[int, dict[str, str]]:
    """verl's console logger lines ``step:N - name:value - ...`` -> {N: {name: value}}."""
    steps: dict[int, dict[str, str]] = {}
    for match in re.finditer(r"step:(\d+) - (.*)", log_text):
        fields = dict(part.split(":", 1) for part in match.group(2).split(" - ") if ":" in part)
        steps.setdefault(int(match.group(1)), {}).update(fields)
    return steps
