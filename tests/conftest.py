"""Fixtures shared by several test files, and the ``network`` marker's reachability check.

Markers (registered in pyproject.toml): ``slow`` (a test or module needing more than a few seconds
of CPU), ``e2e`` (runs verl's trainer under Ray), ``network`` (fetches from the package index). The
development loop is ``python -m pytest -m "not slow and not e2e and not network" tests``; CI runs
everything.

A ``network`` test runs only when the package index answers a short probe; otherwise it is skipped
with the reason, or fails when ``VERL_FLEXREC_REQUIRE_NETWORK=1`` (set by ``.ci/run``, so a CI
machine that lost its network cannot pass by skipping).
"""

import functools
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures_raw import run_in_process, write_movielens  # noqa: E402


@pytest.fixture(scope="session")
def ml_prepared(tmp_path_factory) -> Path:
    """The MovieLens-format fixture through data prep (K=10, every need): OUT/{train,test}.parquet, ..."""
    root = tmp_path_factory.mktemp("ml_prepared")
    write_movielens(root / "raw")
    code, err = run_in_process("movielens", "--raw-dir", root / "raw", "--out-dir", root / "out",
                               "--num-candidates", 10, "--needs", "all")
    assert code == 0, err
    return root / "out"


PROBE_TIMEOUT_S = 5


def _index_url() -> str:
    return (os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple").rstrip("/")


@functools.cache
def _index_unreachable() -> str | None:
    """None when the package index answers; else why not."""
    url = f"{_index_url()}/pip/"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=PROBE_TIMEOUT_S):
            return None
    except urllib.error.HTTPError as e:  # it answered: reachable, whatever it thinks of HEAD
        return None if e.code < 500 else f"{url} answered HTTP {e.code}"
    except (OSError, ValueError) as e:
        return f"{url} unreachable within {PROBE_TIMEOUT_S} s ({getattr(e, 'reason', e)})"


def pytest_runtest_setup(item):
    if item.get_closest_marker("network") is None:
        return
    why = _index_unreachable()
    if why is None:
        return
    if os.environ.get("VERL_FLEXREC_REQUIRE_NETWORK") == "1":
        pytest.fail(f"VERL_FLEXREC_REQUIRE_NETWORK=1 but the package index is not reachable: {why}", pytrace=False)
    pytest.skip(f"network test, package index not reachable: {why}")


def pytest_terminal_summary(terminalreporter):
    if _index_unreachable.cache_info().currsize:  # only when a network test asked
        why = _index_unreachable()
        terminalreporter.write_line("network tests: " + (f"package index {_index_url()} reachable" if why is None
                                                        else f"skipped or failed, {why}"))
