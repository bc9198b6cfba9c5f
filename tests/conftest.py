"""Fixtures shared by several test files."""

import sys
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
