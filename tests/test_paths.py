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
