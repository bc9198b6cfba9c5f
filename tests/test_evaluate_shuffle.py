"""Candidate-order shuffles for the position-bias check (verl_flexrec.evaluate.shuffle)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fixtures_raw import run_in_process, write_movielens  # noqa: E402
from verl_flexrec.evaluate.data import EvalDataError, load_rows  # noqa: E402
from verl_flexrec.evaluate.shuffle import row_permutation, shuffle_row  # noqa: E402
from verl_flexrec.parsing import format_answer, parse_ranking  # noqa: E402


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_shuffle")
    write_movielens(root / "raw")
    out = {}
    for style in ("index", "item"):
        code, err = run_in_process("movielens", "--raw-dir", root / "raw", "--out-dir", root / style,
                                   "--num-candidates", 10, "--needs", "all", "--id-style", style)
        assert code == 0, err
        out[style] = load_rows(root / style / "test.parquet")
    return out


def _candidate_lines(row):
    return [line for line in row.messages[-1]["content"].split("\n") if line.startswith("ID ")]


def test_index_ids_are_renumbered_and_every_field_moves_with_its_line(prepared):
    row = prepared["index"][0]
    perm = row_permutation(0, 1, row.key, row.truth.num_candidates)
    assert sorted(perm.tolist()) == list(range(10)) and perm.tolist() != list(range(10))
    new = shuffle_row(row, perm)
    old_lines, new_lines = _candidate_lines(row), _candidate_lines(new)
    assert new.truth.candidates == [str(i) for i in range(1, 11)]
    for j, p in enumerate(perm):
        assert new_lines[j] == f"ID {j + 1}" + old_lines[p][len(f"ID {p + 1}"):]
        assert new.truth.item_ids[j] == row.truth.item_ids[p]
        assert new.truth.gains[j] == row.truth.gains[p]
        assert new.truth.interest[j] == row.truth.interest[p]
        assert new.truth.categories[j] == row.truth.categories[p]
    # everything outside the candidate block is untouched
    strip = [line for line in row.messages[-1]["content"].split("\n") if not line.startswith("ID ")]
    assert strip == [line for line in new.messages[-1]["content"].split("\n") if not line.startswith("ID ")]
    assert new.messages[0] == row.messages[0]
    assert row.truth.candidates == [str(i) for i in range(1, 11)]  # the original row is not modified


def test_same_ranking_of_items_scores_the_same_after_shuffle(prepared):
    """Ranking the same items in the same order gives the same gains whatever the prompt order."""
    for row in prepared["index"][:6]:
        new = shuffle_row(row, row_permutation(3, 2, row.key, row.truth.num_candidates))
        by_item_old = dict(zip(row.truth.item_ids, row.truth.candidates))
        by_item_new = dict(zip(new.truth.item_ids, new.truth.candidates))
        items = sorted(row.truth.item_ids)
        old = parse_ranking(format_answer([by_item_old[i] for i in items]), row.truth.candidates)
        rep = parse_ranking(format_answer([by_item_new[i] for i in items]), new.truth.candidates)
        gains_old = [row.truth.gains[row.truth.candidates.index(c)] for c in old.order]
        gains_new = [new.truth.gains[new.truth.candidates.index(c)] for c in rep.order]
        assert old.valid and rep.valid and gains_old == gains_new


def test_inverse_permutation_restores_the_row(prepared):
    for row in prepared["index"][:5] + prepared["item"][:5]:
        perm = row_permutation(0, 4, row.key, row.truth.num_candidates)
        back = shuffle_row(shuffle_row(row, perm), np.argsort(perm))
        assert back.messages == row.messages
        assert back.truth.to_dict() == row.truth.to_dict()


def test_item_ids_travel_with_their_line(prepared):
    row = prepared["item"][0]
    assert row.truth.candidates == row.truth.item_ids
    perm = row_permutation(0, 1, row.key, row.truth.num_candidates)
    new = shuffle_row(row, perm)
    assert new.truth.candidates == [row.truth.candidates[p] for p in perm]
    assert [line.split(" | ")[0] for line in _candidate_lines(new)] == [f"ID {c}" for c in new.truth.candidates]


def test_permutations_are_keyed_and_seeded():
    a = row_permutation(0, 1, "k", 30)
    assert np.array_equal(a, row_permutation(0, 1, "k", 30))
    assert not np.array_equal(a, row_permutation(0, 2, "k", 30))
    assert not np.array_equal(a, row_permutation(1, 1, "k", 30))


def test_prompt_without_candidate_lines_is_a_clear_error(prepared):
    row = prepared["index"][0]
    broken = row.with_truth(row.truth, [{"role": "user", "content": "rank these"}])
    with pytest.raises(EvalDataError, match=r"row 0: cannot shuffle"):
        shuffle_row(broken, np.arange(10))
