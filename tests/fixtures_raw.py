"""Test helpers around data preparation: the synthetic raw fixtures (they live in the package,
:mod:`verl_flexrec.data.fixtures`, because the tiny CPU job needs them too) and ways to run a
data-prep command as a user would (``python data_prep/<name>.py``) or in this process.
"""

from __future__ import annotations

from pathlib import Path

from verl_flexrec.data.fixtures import write_esci, write_kuairec, write_movielens  # noqa: F401 (re-exported)

# ---------------------------------------------------------------------------------------------
# Running the scripts as a user would, and reading what they wrote
# ---------------------------------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]


def run_script(name: str, *args, timeout: float = 120):
    """``python data_prep/<name>.py ARGS --no-progress`` from the repository root."""
    import subprocess
    import sys

    cmd = [sys.executable, str(REPO / "data_prep" / f"{name}.py"), *map(str, args), "--no-progress"]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def read_rows(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def parquet_files(folder: Path) -> list[str]:
    """Names in ``folder`` that a failed run must not leave behind (outputs and temporaries)."""
    return sorted(p.name for p in Path(folder).iterdir() if ".parquet" in p.name or ".tmp" in p.name) \
        if Path(folder).exists() else []


def run_in_process(name: str, *args) -> tuple[int, str]:
    """The same script's ``main`` in this process (faster); returns (exit code, stderr)."""
    import contextlib
    import importlib
    import io

    from verl_flexrec.data.io import run_main

    main = importlib.import_module(f"verl_flexrec.data.{name}").main
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = run_main(main, [*map(str, args), "--no-progress"])
    return code, err.getvalue()


def run_either(via: str, name: str, *args) -> tuple[int, str]:
    """``via`` = 'subprocess' (as a user runs it) or 'in-process'."""
    if via == "subprocess":
        result = run_script(name, *args)
        return result.returncode, result.stderr
    return run_in_process(name, *args)
