"""Every shell command shown in README.md and docs/*.md still exists and still takes the flags shown.

The fenced ``bash`` blocks are read as a user would paste them (``\\`` continuations joined,
comments and ``VAR=value`` assignments dropped), and each command is checked by what it runs:

* ``python -m MODULE [SUB] ...`` / ``python SCRIPT ...``: ``--help`` (of the sub-command when
  there is one) exits 0, and every ``--flag`` the docs pass appears in that help;
* ``python -m verl.trainer.main_ppo ...`` (Hydra): ``--help`` exits 0;
* ``bash SCRIPT ...``: the script exists and parses (``bash -n``);
* ``pip install ...``: every extra named exists in pyproject.toml;
* ``python -m verl_flexrec doctor`` and ``python -c CODE`` (in a scratch folder): run for real.

Fenced ``python`` blocks must import.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
HYDRA_APPS = {"verl.trainer.main_ppo"}


def _blocks(lang: str) -> list[tuple[str, str]]:
    out = []
    for page in PAGES:
        for m in FENCE.finditer(page.read_text()):
            if m.group(1) == lang:
                out.append((page.relative_to(ROOT).as_posix(), m.group(2)))
    return out


def _commands() -> list[tuple[str, list[str]]]:
    cmds = []
    for where, body in _blocks("bash"):
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if not line or line.startswith("#"):
                continue
            words = shlex.split(line)
            while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):  # VAR=value prefixes
                words = words[1:]
            if words and words not in [c for _, c in cmds]:  # the same command on two pages: check once
                cmds.append((where, words))
    return cmds


COMMANDS = _commands()


def _run(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@lru_cache(maxsize=None)
def _help(target: tuple[str, ...]) -> str:
    if target[0] == "-m" and target[1] not in HYDRA_APPS:
        return _help_in_process(target[1], list(target[2:]))
    proc = _run([sys.executable, *target, "--help"])
    assert proc.returncode == 0, f"`python {' '.join(target)} --help` failed:\n{proc.stderr[-2000:]}"
    return proc.stdout


def _help_in_process(module: str, args: list[str]) -> str:
    """``python -m module *args --help`` in this process (argparse exits 0 after printing)."""
    import contextlib
    import io
    import runpy

    out = io.StringIO()
    argv = sys.argv
    sys.argv = [module, *args, "--help"]
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        sys.argv = argv
    assert exit_info.value.code in (0, None), f"`python -m {module} {' '.join(args)} --help` exited {exit_info.value.code}"
    return out.getvalue()


def _run_snippet(code: str) -> None:
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
        proc = subprocess.run([sys.executable, "-c", code], cwd=scratch, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _python_target(args: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """(what to ask for --help, the rest of the arguments) of `python ARGS`."""
    if args[0] == "-m":
        target, rest = (args[0], args[1]), args[2:]
    else:
        target, rest = (args[0],), args[1:]
    # a sub-command: the first argument when it is a bare word the help lists
    if rest and re.fullmatch(r"[a-z][a-z0-9_-]*", rest[0]) and target[-1] not in HYDRA_APPS:
        if re.search(rf"\b{re.escape(rest[0])}\b", _help(target)):
            return (*target, rest[0]), rest[1:]
    return target, rest


def _check(words: list[str]) -> None:
    prog, args = words[0], words[1:]
    if prog == "pip":
        extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
        for spec in args:
            m = re.search(r"\.\[([\w,-]+)\]", spec)
            if m:
                assert set(m.group(1).split(",")) <= extras, f"unknown extra in {spec!r}; pyproject has {sorted(extras)}"
        return
    if prog == "bash":
        script = ROOT / args[0]
        assert script.is_file(), f"{args[0]} does not exist"
        proc = _run(["bash", "-n", str(script)])
        assert proc.returncode == 0, proc.stderr
        return
    assert prog == "python", f"the docs test does not know how to check `{prog}`; teach it"
    if args[:2] == ["-m", "pytest"]:
        return
    if args[:3] == ["-m", "verl_flexrec", "doctor"]:
        proc = _run([sys.executable, *args])
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        return
    if args[0] == "-c":  # a one-liner: run it, in a scratch folder
        _run_snippet(args[1])
        return
    if args[0] != "-m":
        assert (ROOT / args[0]).is_file(), f"{args[0]} does not exist"
    target, rest = _python_target(args)
    text = _help(target)
    if target[-1] in HYDRA_APPS:
        return
    for flag in (a.split("=", 1)[0] for a in rest if a.startswith("--")):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), f"`python {' '.join(target)}` has no {flag}"


def _needs_a_fresh_interpreter(words: list[str]) -> bool:
    """Checked in a subprocess that imports verl (seconds of CPU each): doctor, Hydra apps, scripts."""
    args = words[1:]
    return words[0] == "python" and (args[:1] != ["-m"] or args[1] in HYDRA_APPS or args[1].startswith("verl.")
                                     or args[1:3] == ["verl_flexrec", "doctor"])


@pytest.mark.parametrize(
    "where,words",
    [pytest.param(w, c, marks=[pytest.mark.slow] if _needs_a_fresh_interpreter(c) else []) for w, c in COMMANDS],
    ids=[f"{w}:{' '.join(c)[:60]}" for w, c in COMMANDS],
)
def test_documented_command(where, words):
    _check(words)


@pytest.mark.slow  # a fresh interpreter per block
@pytest.mark.parametrize("where,body", _blocks("python"), ids=[w for w, _ in _blocks("python")])
def test_documented_python_imports(where, body):
    imports = "\n".join(line for line in body.splitlines() if re.match(r"(from \S+ )?import ", line))
    proc = _run([sys.executable, "-c", imports])
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_every_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in readme, f"README does not link docs/{page.name}"


def test_relative_links_resolve():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"


def test_readme_is_a_front_door():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200
