import os
from pathlib import Path

from verl_flexrec.paths import portable_path, portable_paths_in


def test_portable_path_is_relative_to_the_folder(tmp_path):
    base = tmp_path / "run" / "eval"
    assert portable_path(tmp_path / "run" / "data" / "test.parquet", base) == "../data/test.parquet"
    assert portable_path(base / "x.json", base) == "x.json"
    assert portable_path(base, base) == "."
    assert (base / portable_path("/etc/hosts", base)).resolve() == Path("/etc/hosts").resolve()


def test_paths_in_strings_are_rewritten_as_whole_tokens_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data" / "test.parquet"
    obj = {"data": str(data), "cmd": f"run --data {data} --out-dir out", "note": "without output",
           "nested": [f"next to {data}: derived", 1.5, None], "n": 3}
    got = portable_paths_in(obj, tmp_path / "out", [data, "out", None])
    assert got == {"data": "../data/test.parquet", "cmd": "run --data ../data/test.parquet --out-dir .",
                   "note": "without output", "nested": ["next to ../data/test.parquet: derived", 1.5, None], "n": 3}
    assert portable_paths_in(obj, tmp_path, []) is obj


def test_measure_report_file_holds_the_command_relative_to_its_folder(tmp_path):
    import json
    import sys

    from verl_flexrec.cpu.measure import main

    script = tmp_path / "job.py"
    script.write_text("print('hi')\n")
    out = tmp_path / "reports" / "stats.json"
    out.parent.mkdir()
    assert main(["--out", str(out), "--", sys.executable, str(script), "--flag", "x"]) == 0
    report = json.loads(out.read_text())
    assert report["returncode"] == 0 and report["cmd"][1:] == ["../job.py", "--flag", "x"]
    assert os.path.normpath(out.parent / report["cmd"][0]) == os.path.abspath(sys.executable)  # the link itself
    assert str(tmp_path) not in out.read_text()
