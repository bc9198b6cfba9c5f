"""--download: resume and checksum, against a loopback HTTP server this test starts (no internet)."""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from verl_flexrec.data import movielens  # noqa: E402
from verl_flexrec.data.download import download, extract_zip, zenodo_checksum  # noqa: E402
from verl_flexrec.data.io import DataPrepError, run_main  # noqa: E402
from fixtures_raw import read_rows, write_movielens  # noqa: E402

PAYLOAD = bytes(range(256)) * 12_000  # ~3 MB, several read chunks


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server naming)
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        data = server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        wanted = self.headers.get("Range")
        if wanted and server.honor_range:
            start = int(wanted.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in server.drop_once:  # send half, then hang up
            server.drop_once.discard(self.path)
            self.wfile.write(body[: len(body) // 2])
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.requests, httpd.drop_once, httpd.honor_range = {}, [], set(), True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_resumes_after_a_dropped_connection(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    server.drop_once.add("/a.bin")
    dest = download(f"{server.base}/a.bin", tmp_path / "a.bin", checksum=_sha256(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "a.bin.part").exists()
    assert server.requests == [("/a.bin", None), ("/a.bin", f"bytes={len(PAYLOAD) // 2}-")]


def test_resumes_a_part_file_left_by_an_earlier_run(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD[:1000])
    download(f"{server.base}/a.bin", tmp_path / "a.bin", checksum="md5:" + hashlib.md5(PAYLOAD).hexdigest(),
             progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert server.requests == [("/a.bin", "bytes=1000-")]


def test_server_ignoring_range_starts_over(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    server.honor_range = False
    (tmp_path / "a.bin.part").write_bytes(b"garbage" * 100)
    download(f"{server.base}/a.bin", tmp_path / "a.bin", checksum=_sha256(PAYLOAD), progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    with pytest.raises(DataPrepError, match="checksum mismatch .*the downloaded file was deleted"):
        download(f"{server.base}/a.bin", tmp_path / "a.bin", checksum=_sha256(b"other"), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_unpublished_checksum_is_recorded_then_enforced(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    dest = download(f"{server.base}/a.bin", tmp_path / "a.bin", progress=False)
    record = (tmp_path / "a.bin.sha256").read_text()
    assert record.startswith(_sha256(PAYLOAD))
    download(f"{server.base}/a.bin", dest, progress=False)  # present and verified: no new request
    assert len(server.requests) == 1
    dest.unlink()
    server.files["/a.bin"] = PAYLOAD[::-1]  # the file changed upstream
    with pytest.raises(DataPrepError, match="checksum mismatch"):
        download(f"{server.base}/a.bin", dest, progress=False)


def test_http_error_is_one_clear_message(server, tmp_path):
    with pytest.raises(DataPrepError, match="HTTP 404"):
        download(f"{server.base}/missing.zip", tmp_path / "m.zip", progress=False)


def test_zenodo_checksum_lookup(server):
    server.files["/api/records/18164998"] = json.dumps(
        {"files": [{"key": "KuaiRec.zip", "checksum": "md5:0123456789abcdef0123456789abcdef"}]}).encode()
    assert zenodo_checksum("18164998", "KuaiRec.zip", api=f"{server.base}/api/records") == "md5:0123456789abcdef0123456789abcdef"
    assert zenodo_checksum("404", "KuaiRec.zip", api=f"{server.base}/api/records") is None


def test_extract_refuses_paths_outside_the_folder(tmp_path):
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as z:
        z.writestr("../escape.txt", "x")
    with pytest.raises(DataPrepError, match="unsafe path"):
        extract_zip(tmp_path / "evil.zip", tmp_path / "into")


@pytest.fixture
def ml_zip(tmp_path):
    """An ml-1m.zip laid out like GroupLens' (a top-level ml-1m/ folder), built from the fixture."""
    folder = write_movielens(tmp_path / "src")
    archive = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(folder.iterdir()):
            z.write(f, f"ml-1m/{f.name}")
    return archive.read_bytes()


def test_movielens_download_flag(server, tmp_path, ml_zip, capsys):
    server.files["/ml-1m.zip"] = ml_zip
    server.drop_once.add("/ml-1m.zip")
    raw, out = tmp_path / "raw", tmp_path / "out"
    argv = ["--raw-dir", str(raw), "--out-dir", str(out), "--num-candidates", "10", "--no-progress",
            "--download", "--download-url", server.base]
    # A mirror is verified against GroupLens' published MD5: the fixture zip is not the real one.
    assert run_main(movielens.main, argv) == 2
    assert "checksum mismatch (expected md5:c4d9eecfca2ab87c1945afe126590906" in capsys.readouterr().err
    # 'record': compute and record the checksum instead; the run then prepares the data.
    assert run_main(movielens.main, [*argv, "--download-checksum", "record"]) == 0
    assert (raw / "ml-1m" / "ratings.dat").is_file() and (raw / "ml-1m.zip.sha256").is_file()
    assert read_rows(out / "test.parquet")
