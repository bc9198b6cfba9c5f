"""Resumable downloads with checksum verification and a progress bar.

Used by the datasets' ``--download`` flag; also runnable on its own::

    python -m verl_flexrec.data download URL DEST [--checksum sha256:HEX|md5:HEX]

How a download works:

* bytes go to ``DEST.part``; an interrupted download resumes from there with an HTTP ``Range``
  request (a server that ignores ranges makes it start over);
* the finished file is checked against the expected checksum (``sha256:`` or ``md5:``); on a
  mismatch the partial file is deleted and the error says so;
* where no checksum is published, the SHA-256 of the first complete download is **computed and
  recorded** in ``DEST.sha256``; later downloads of the same file are verified against it;
* only a verified file is renamed to ``DEST``; an existing ``DEST`` that verifies is not fetched
  again.

Official sources (checked 2026 against the publishers' pages):

* MovieLens-1M: ``https://files.grouplens.org/datasets/movielens/ml-1m.zip``, MD5
  ``c4d9eecfca2ab87c1945afe126590906`` as published in ``ml-1m.zip.md5`` next to it.
* KuaiRec 2.0: ``https://zenodo.org/records/18164998/files/KuaiRec.zip`` (the link in the
  official README). Zenodo publishes an MD5 per file in its record API
  (``https://zenodo.org/api/records/18164998``); it is looked up at download time, and when
  the lookup fails the checksum is computed and recorded instead.
* Amazon ESCI: the two parquet files of ``github.com/amazon-science/esci-data``
  (``shopping_queries_dataset/``), stored with Git LFS; the LFS pointers publish their SHA-256
  and size (recorded below).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import sys
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from tqdm import tqdm

from ..atomic import write_text_atomic
from .io import DataPrepError, log, run_main

CHUNK = 1 << 20


@dataclass(frozen=True)
class Source:
    """One official file: where it lives, where it goes under RAW, how to verify it."""

    url: str
    dest: str                       # path under --raw-dir
    checksum: str | None = None     # "sha256:HEX" / "md5:HEX"; None: looked up or recorded
    size: int | None = None
    extract: bool = False           # unpack the zip into --raw-dir afterwards
    lookup: Callable[[], str | None] | None = None  # fetches a published checksum at run time


def zenodo_checksum(record: str, filename: str, *, api: str = "https://zenodo.org/api/records") -> str | None:
    """The MD5 Zenodo publishes for ``filename`` in ``record`` ("md5:HEX"), or None."""
    try:
        with urllib.request.urlopen(f"{api}/{record}", timeout=30) as r:
            meta = json.load(r)
        for f in meta.get("files", []):
            if f.get("key") == filename and str(f.get("checksum", "")).startswith("md5:"):
                return f["checksum"]
    except (OSError, ValueError) as e:
        log(f"note: could not read the published checksum from {api}/{record} ({e})")
    return None


def parse_checksum(text: str) -> tuple[str, str]:
    algo, _, digest = text.partition(":")
    algo = algo.lower()
    if algo not in ("sha256", "md5") or not digest or any(c not in "0123456789abcdefABCDEF" for c in digest):
        raise DataPrepError(f"checksum {text!r}: expected 'sha256:HEX' or 'md5:HEX'")
    return algo, digest.lower()


def file_digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _record_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def _expected(dest: Path, checksum: str | None) -> str | None:
    """The checksum to verify: the given one, else one recorded by an earlier download."""
    if checksum:
        return checksum
    record = _record_path(dest)
    if record.is_file():
        return record.read_text().split()[0]
    return None


def _verify(path: Path, checksum: str) -> tuple[bool, str]:
    algo, want = parse_checksum(checksum)
    got = file_digest(path, algo)
    return got == want, f"{algo}:{got}"


def _fetch_into(url: str, part: Path, *, timeout: float, progress: bool, desc: str) -> None:
    """Append the rest of ``url`` to ``part`` (one HTTP request)."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "verl-flexrec-data-prep"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left to fetch: the part file is complete
            return
        raise
    with response:
        if offset and response.status != 206:
            offset = 0  # the server ignored the range: start over
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with open(part, "ab" if offset else "wb") as out, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=desc, disable=not progress, leave=False,
        ) as bar:
            received = 0
            while True:
                block = response.read(CHUNK)
                if not block:
                    break
                out.write(block)
                received += len(block)
                bar.update(len(block))
        if length is not None and received < int(length):
            raise ConnectionError(f"connection closed after {offset + received:,} of {total:,} bytes")


def download(url: str, dest: Path, *, checksum: str | None = None, progress: bool = True,
             timeout: float = 60.0, retries: int = 5) -> Path:
    """Download ``url`` to ``dest``, resuming and verifying as the module docstring describes."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    expected = _expected(dest, checksum)
    if expected:
        parse_checksum(expected)
    if dest.is_file():
        if expected is None:
            _record(dest, url)
            return dest
        ok, _ = _verify(dest, expected)
        if ok:
            log(f"{dest}: already downloaded and verified")
            return dest
        log(f"{dest}: exists but does not match {expected}; downloading again")
        dest.unlink()

    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch_into(url, part, timeout=timeout, progress=progress, desc=dest.name)
            break
        except (OSError, http.client.HTTPException) as e:  # dropped connections, timeouts, HTTP errors
            if isinstance(e, urllib.error.HTTPError) and e.code not in (408, 429, 500, 502, 503, 504):
                raise DataPrepError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
            if attempt == retries:
                raise DataPrepError(
                    f"download of {url} failed after {retries + 1} attempts ({e}); {part} keeps the "
                    f"{part.stat().st_size if part.exists() else 0:,} bytes received: run again to resume"
                ) from None
            log(f"note: download interrupted ({e}); resuming")

    # DEST.part is the atomic writer's temporary here, kept (not deleted) on failure so a rerun resumes
    if expected:
        ok, got = _verify(part, expected)
        if not ok:
            part.unlink()
            raise DataPrepError(f"download of {url}: checksum mismatch (expected {expected}, got {got}); "
                                f"the downloaded file was deleted")
        part.replace(dest)
    else:
        part.replace(dest)
        _record(dest, url)
    return dest


def _record(dest: Path, url: str) -> None:
    digest = file_digest(dest, "sha256")
    write_text_atomic(_record_path(dest), f"sha256:{digest}  {url}\n")
    log(f"note: no published checksum for {dest.name}; recorded sha256:{digest} in {_record_path(dest)} "
        f"(later downloads are verified against it)")


def extract_zip(archive: Path, into: Path) -> None:
    """Unpack ``archive`` into ``into`` (once; a marker file remembers it), refusing unsafe paths."""
    marker = into / f".{archive.name}.extracted"
    if marker.is_file():
        return
    try:
        with zipfile.ZipFile(archive) as z:
            root = into.resolve()
            for name in z.namelist():
                target = (into / name).resolve()
                if root != target and root not in target.parents:
                    raise DataPrepError(f"{archive}: unsafe path {name!r} in the archive")
            z.extractall(into)
    except zipfile.BadZipFile as e:
        raise DataPrepError(f"{archive}: not a valid zip archive ({e}); delete it and download again") from None
    marker.write_text("ok\n")


def fetch_sources(raw_dir: Path, sources: Sequence[Source], *, mirror: str | None = None,
                  checksum_mode: str | None = None, progress: bool = True) -> None:
    """Download (and unpack) every source into ``raw_dir``.

    ``mirror``: base URL holding the same file names (replaces the official host).
    ``checksum_mode``: None = published checksums; 'record' = compute and record instead
    (for a mirror whose files differ from the official ones); 'sha256:HEX'/'md5:HEX' = this
    checksum (one source only).
    """
    raw_dir = Path(raw_dir)
    if checksum_mode not in (None, "record") and len(sources) != 1:
        raise DataPrepError("--download-checksum HEX needs a single-file dataset; use 'record' instead")
    for source in sources:
        url = source.url if mirror is None else f"{mirror.rstrip('/')}/{source.url.rsplit('/', 1)[-1]}"
        if checksum_mode == "record":
            checksum = None
        elif checksum_mode is not None:
            checksum = checksum_mode
        else:
            checksum = source.checksum or (source.lookup() if source.lookup else None)
        dest = raw_dir / source.dest
        size = f" ({source.size / 2**20:,.0f} MiB)" if source.size else ""
        log(f"downloading {url}{size} -> {dest}")
        download(url, dest, checksum=checksum, progress=progress)
        if source.extract:
            extract_zip(dest, raw_dir)


def main(argv: list[str] | None = None, *, prog: str | None = None) -> None:
    p = argparse.ArgumentParser(prog=prog, description="Resumable, verified download of one file.")
    p.add_argument("url")
    p.add_argument("dest", type=Path)
    p.add_argument("--checksum", default=None, help="sha256:HEX or md5:HEX (default: compute and record)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    download(args.url, args.dest, checksum=args.checksum, progress=not args.no_progress)


if __name__ == "__main__":
    sys.exit(run_main(main))
