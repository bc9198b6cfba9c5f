"""The shared prompt builder (verl_flexrec.prompt)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from verl_flexrec.needs import get_need
from verl_flexrec.parsing import format_answer, parse_ranking
from verl_flexrec.prompt import (
    ANSWER_FORMAT_INSTRUCTION,
    Candidate,
    HistoryItem,
    build_messages,
    candidate_ids,
    format_count,
)

CANDIDATES = [
    Candidate(id="1", title="Cat video", category="Pets", popularity=1234),
    Candidate(id="2", title="Noodle recipe", category="Food", popularity=1),
    Candidate(id="3", title="Piano cover", category="Music", popularity=0),
]
HISTORY = [HistoryItem(title="Dog video", category="Pets", feedback="watch ratio 1.20"), HistoryItem(title="Song")]


def _user(need_name, **kw):
    messages = build_messages(get_need(need_name), kw.pop("candidates", CANDIDATES), **kw)
    assert [m["role"] for m in messages] == ["system", "user"]
    return messages[1]["content"]


def test_user_message_has_history_need_candidates_and_format_in_order():
    text = _user("maximize_interest", history=HISTORY, user_profile="female, age 25-34", item_noun="video",
                 history_heading="Videos I watched")
    parts = ["About me: female, age 25-34", "Videos I watched (oldest first):", "- Dog video [Pets] (watch ratio 1.20)",
             "- Song", get_need("maximize_interest").instruction, "Candidate videos (3):",
             "ID 1 | Cat video | category: Pets", "ID 2 | Noodle recipe | category: Food",
             "ID 3 | Piano cover | category: Music", ANSWER_FORMAT_INSTRUCTION]
    positions = [text.index(p) for p in parts]
    assert positions == sorted(positions)
    assert text.endswith(ANSWER_FORMAT_INSTRUCTION)
    assert "plays" not in text  # maximize_interest does not ask for popularity


def test_trend_promotion_shows_recent_popularity():
    text = _user("trend_promotion", history=HISTORY)
    assert "ID 1 | Cat video | category: Pets | 1,234 plays in the last day" in text
    assert "ID 2 | Noodle recipe | category: Food | 1 play in the last day" in text
    assert "ID 3 | Piano cover | category: Music | 0 plays in the last day" in text
    text = _user("trend_promotion", history=HISTORY, popularity_unit="ratings in the last 30 days")
    assert "| 1 rating in the last 30 days" in text and "| 1,234 ratings in the last 30 days" in text


def test_product_search_uses_the_query_and_product_text():
    products = [Candidate(id="1", product_text="Running shoe (brand: Acme)"), Candidate(id="2", product_text="Sock")]
    text = _user("product_search", candidates=products, query="running shoes", history=HISTORY)
    assert "My search query: running shoes" in text
    assert "ID 1 | Running shoe (brand: Acme)\nID 2 | Sock" in text
    assert "Dog video" not in text


def test_empty_history_is_said_plainly():
    assert "My history: none." in _user("explore_new_topics")


def test_candidate_ids():
    assert candidate_ids(["v9", "v4", "v7"]) == ["1", "2", "3"]
    assert candidate_ids(["B07X", "1429"], "item") == ["B07X", "1429"]
    with pytest.raises(ValueError, match="cannot be shown"):
        candidate_ids(["a b"], "item")
    with pytest.raises(ValueError, match="not unique"):
        candidate_ids(["7", "7"], "item")
    with pytest.raises(ValueError, match="unknown id style"):
        candidate_ids(["7"], "title")
    assert format_count(1234567) == "1,234,567"


def test_answer_format_matches_the_parser():
    assert "<answer>[7, 12, 3]</answer>" in ANSWER_FORMAT_INSTRUCTION
    example = "<think>reasons</think>\n<answer>[7, 12, 3]</answer>"
    assert parse_ranking(example, ["7", "12", "3"]).valid
    for ids in (candidate_ids(list("abcdefghij")), candidate_ids(["B07X", "1429", "v_1.2#x-y"], "item")):
        assert parse_ranking(format_answer(ids[::-1], "x"), ids).valid


def test_prompt_module_does_not_import_verl():
    code = "import sys, verl_flexrec.prompt; assert 'verl' not in sys.modules, 'verl imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
