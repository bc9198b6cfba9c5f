"""Tests for verl_flexrec.parsing: unit cases per error code, a property fuzz, and a reference parser."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verl_flexrec.parsing import (
    ParseError,
    ParsedRanking,
    complete_ranking,
    format_answer,
    parse_ranking,
)

ALIASES = [str(i) for i in range(1, 31)]
ITEM_IDS = ["v1429", "v88", "B00X-7", "tt0111161", "item_3.2", "#42"]
TAGS = ["<think>", "</think>", "<answer>", "</answer>"]
ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.#-"

# Fuzz settings: no example database (keeps the repo clean), no deadline (shared 2-core CI).
FUZZ = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def answer(ids, reasoning="I compared them.", think_open=True):
    head = "<think>" if think_open else ""
    return f"{head}{reasoning}</think>\n<answer>[{', '.join(ids)}]</answer>"


def assert_invariants(response: str, candidates, parsed: ParsedRanking) -> None:
    """Properties every parse result must satisfy, whatever the input."""
    assert parsed.valid == (parsed.error is None)
    assert (parsed.detail is None) == parsed.valid
    assert len(parsed.order) == len(parsed.spans)
    assert len(set(parsed.order)) == len(parsed.order)
    assert set(parsed.order) <= set(candidates)
    for cid, (start, end) in zip(parsed.order, parsed.spans):
        assert response[start:end] == cid
    if parsed.answer_span is not None:
        start, end = parsed.answer_span
        assert response[start - len("<answer>") : start] == "<answer>"
        assert response[end : end + len("</answer>")] == "</answer>"
        for span_start, span_end in parsed.spans:
            assert start <= span_start < span_end <= end
    else:
        assert parsed.order == ()
    if parsed.valid:
        assert sorted(parsed.order) == sorted(candidates)


# --------------------------------------------------------------------------------------------
# Valid responses
# --------------------------------------------------------------------------------------------


def test_valid_canonical_answer_with_spans():
    order = ["3", "1", "2"]
    response = answer(order)
    parsed = parse_ranking(response, ["1", "2", "3"])
    assert parsed.valid and parsed.error is None and parsed.detail is None
    assert parsed.order == ("3", "1", "2")
    assert [response[s:e] for s, e in parsed.spans] == order
    start, end = parsed.answer_span
    assert response[start:end] == "[3, 1, 2]"


def test_valid_without_leading_think_because_template_prefilled_it():
    parsed = parse_ranking("some reasoning</think><answer>[2, 1]</answer>", ["1", "2"])
    assert parsed.valid
    assert parsed.order == ("2", "1")


@pytest.mark.parametrize(
    "body",
    [
        "['2', '1', '3']",
        '["2", "1", "3"]',
        "['2', \"1\", 3]",
        "2, 1, 3",
        "2 1 3",
        "2,1,3",
        "[\n  2,\n  1,\n  3\n]",
        "2\n1\n3",
        "  [2 ,1 , 3]  ",
    ],
)
def test_valid_answer_body_variants(body):
    parsed = parse_ranking(f"<think>x</think><answer>{body}</answer>", ["1", "2", "3"])
    assert parsed.valid, parsed.detail
    assert parsed.order == ("2", "1", "3")


def test_valid_item_style_ids():
    order = ["tt0111161", "v1429", "#42", "item_3.2", "B00X-7", "v88"]
    parsed = parse_ranking(answer(order), ITEM_IDS)
    assert parsed.valid
    assert parsed.order == tuple(order)


def test_similar_ids_are_matched_whole_not_by_prefix():
    # "1" and "10" share a prefix: the parser must read "10" as one id.
    candidates = ["1", "10", "101"]
    parsed = parse_ranking(answer(["101", "1", "10"]), candidates)
    assert parsed.valid
    assert parsed.order == ("101", "1", "10")


def test_surrounding_whitespace_is_allowed():
    response = "\n  <think>r</think>\n\n  <answer> [1, 2] </answer>\n\n"
    assert parse_ranking(response, ["1", "2"]).valid


def test_require_think_false_accepts_bare_answer():
    assert parse_ranking("<answer>[1, 2]</answer>", ["1", "2"], require_think=False).valid
    assert parse_ranking(answer(["1", "2"]), ["1", "2"], require_think=False).valid
    assert parse_ranking("why</think><answer>[1, 2]</answer>", ["1", "2"], require_think=False).valid


def test_require_think_false_still_rejects_text_before_answer():
    parsed = parse_ranking("Sure! <answer>[1, 2]</answer>", ["1", "2"], require_think=False)
    assert parsed.error is ParseError.EXTRA_TEXT


def test_require_think_true_rejects_bare_answer():
    parsed = parse_ranking("<answer>[1, 2]</answer>", ["1", "2"])
    assert parsed.error is ParseError.MISSING_TAGS
    assert parsed.order == ("1", "2")  # ids are still read for partial credit


# --------------------------------------------------------------------------------------------
# One test per error code
# --------------------------------------------------------------------------------------------


def test_truncated_answer_never_closes():
    parsed = parse_ranking("<think>r</think><answer>[1, 2", ["1", "2"])
    assert parsed.error is ParseError.TRUNCATED
    assert parsed.order == () and parsed.answer_span is None
    assert "<answer>" in parsed.detail


def test_truncated_think_never_closes():
    parsed = parse_ranking("<think>I should rank 2 first because", ["1", "2"])
    assert parsed.error is ParseError.TRUNCATED
    assert "<think>" in parsed.detail


@pytest.mark.parametrize(
    "response",
    [
        "no tags at all, 1, 2",
        "<think>r</think>",  # no answer block
        "<think>r</think>[1, 2]</answer>",  # missing <answer>
        "<think>r</think><answer>[1, 2]</answer><answer>[2, 1]</answer>",  # repeated answer
        "<think>a</think><think>b</think><answer>[1, 2]</answer>",  # repeated think
        "<answer>[1, 2]</answer><think>r</think>",  # out of order
        "<think>r</think></answer>[1, 2]<answer></answer>",  # out of order and repeated
    ],
)
def test_missing_tags(response):
    parsed = parse_ranking(response, ["1", "2"])
    assert parsed.error is ParseError.MISSING_TAGS, parsed.detail
    assert not parsed.valid


@pytest.mark.parametrize(
    "response",
    [
        "Sure! <think>r</think><answer>[1, 2]</answer>",
        "<think>r</think> so: <answer>[1, 2]</answer>",
        "<think>r</think><answer>[1, 2]</answer> Hope this helps",
        "<think>r</think><answer>Ranking: [1, 2]</answer>",
        "<think>r</think><answer>[1; 2]</answer>",
        "<think>r</think><answer>[1, 2</answer>",
        "<think>r</think><answer>1, 2]</answer>",
        "<think>r</think><answer>[1,, 2]</answer>",
        "<think>r</think><answer>[, 1, 2]</answer>",
        "<think>r</think><answer>[1, 2,]</answer>",
        "<think>r</think><answer>['1'\"2\"]</answer>",
        "<think>r</think><answer>['1\", 2]</answer>",
        "<think>r</think><answer>[[1, 2]]</answer>",
        "<think>r</think><answer>[1, 2]\u200b</answer>",
    ],
)
def test_extra_text(response):
    parsed = parse_ranking(response, ["1", "2"])
    assert parsed.error is ParseError.EXTRA_TEXT, parsed.detail


def test_unknown_id_reports_id_and_position():
    response = "<think>r</think><answer>[1, 99, 2]</answer>"
    parsed = parse_ranking(response, ["1", "2"])
    assert parsed.error is ParseError.UNKNOWN_ID
    assert parsed.detail == f"unknown id '99' at char {response.index('99')}"
    assert parsed.order == ("1", "2")


def test_duplicate_id():
    response = "<think>r</think><answer>[2, 1, 2]</answer>"
    parsed = parse_ranking(response, ["1", "2"])
    assert parsed.error is ParseError.DUPLICATE_ID
    assert parsed.order == ("2", "1")
    assert parsed.spans == ((25, 26), (28, 29))  # first occurrences only
    assert "'2'" in parsed.detail


def test_missing_ids():
    parsed = parse_ranking(answer(["3", "1"]), ["1", "2", "3"])
    assert parsed.error is ParseError.MISSING_IDS
    assert parsed.order == ("3", "1")
    assert "'2'" in parsed.detail


@pytest.mark.parametrize("body", ["", "[]", "  [ ]  "])
def test_empty_answer_is_missing_ids(body):
    parsed = parse_ranking(f"<think>r</think><answer>{body}</answer>", ["1", "2"])
    assert parsed.error is ParseError.MISSING_IDS
    assert parsed.order == ()


@pytest.mark.parametrize(
    "response, expected",
    [
        # truncated beats missing_tags (the repeated <answer> is also out of place)
        ("<think>r</think><answer>[1]</answer><answer>[1, 2", ParseError.TRUNCATED),
        # missing_tags beats extra_text
        ("hello <answer>[1, 2]</answer> bye", ParseError.MISSING_TAGS),
        # extra_text beats unknown_id, duplicate_id and missing_ids
        ("<think>r</think><answer>[9, 9; 1]</answer>", ParseError.EXTRA_TEXT),
        # unknown_id beats duplicate_id and missing_ids
        ("<think>r</think><answer>[1, 1, 9]</answer>", ParseError.UNKNOWN_ID),
        # duplicate_id beats missing_ids
        ("<think>r</think><answer>[1, 1]</answer>", ParseError.DUPLICATE_ID),
    ],
)
def test_error_precedence(response, expected):
    assert parse_ranking(response, ["1", "2"]).error is expected


@pytest.mark.parametrize(
    "candidates",
    [[], ["1", "1"], ["1", "two words"], ["1", ""], ["1", "a,b"], ["1", "'q'"], [1, 2]],
)
def test_bad_candidate_ids_raise_value_error(candidates):
    with pytest.raises(ValueError, match="programming error"):
        parse_ranking(answer(["1"]), candidates)


def test_non_string_response_is_malformed_not_an_exception():
    parsed = parse_ranking(None, ["1"])  # type: ignore[arg-type]
    assert not parsed.valid and parsed.order == ()


def test_long_response_is_linear_enough():
    """Reasoning full of tag-like fragments (the hot path): 8x the text must cost about 8x, not 64x.

    A ratio measured in one run, interleaved and best of 5, so the machine's speed and load cancel;
    the bound (24) leaves 3x slack over linear and is far below quadratic.
    """
    import time

    def response(n):
        return "<think>" + "<thi nk> 1, 2 [ ] " * n + "</think><answer>[" + ", ".join(ALIASES) + "]</answer>"

    small, large = response(3_000), response(24_000)  # 54k and 432k characters
    assert parse_ranking(small, ALIASES).valid and parse_ranking(large, ALIASES).valid
    best = {small: float("inf"), large: float("inf")}
    for _ in range(5):
        for text in (small, large):
            start = time.perf_counter()
            parse_ranking(text, ALIASES)
            best[text] = min(best[text], time.perf_counter() - start)
    assert best[large] / best[small] < 24, best.values()


# --------------------------------------------------------------------------------------------
# format_answer / complete_ranking
# --------------------------------------------------------------------------------------------


def test_format_answer_exact_text():
    assert format_answer(["3", "1"], "why") == "<think>why</think>\n<answer>[3, 1]</answer>"


@settings(max_examples=200, **FUZZ)
@given(st.permutations(ALIASES + ITEM_IDS), st.text(alphabet=st.characters(blacklist_characters="<")))
def test_format_answer_round_trip(order, reasoning):
    parsed = parse_ranking(format_answer(order, reasoning), ALIASES + ITEM_IDS)
    assert parsed.valid
    assert list(parsed.order) == order


def test_complete_ranking_appends_missing_in_prompt_order():
    candidates = ["1", "2", "3", "4", "5"]
    parsed = parse_ranking(answer(["4", "2"]), candidates)
    assert complete_ranking(parsed, candidates) == ["4", "2", "1", "3", "5"]


def test_complete_ranking_of_unparseable_response_is_prompt_order():
    candidates = ["b", "a", "c"]
    parsed = parse_ranking("garbage", candidates)
    assert complete_ranking(parsed, candidates) == candidates


def test_complete_ranking_keeps_valid_order():
    candidates = ["1", "2", "3"]
    parsed = parse_ranking(answer(["3", "1", "2"]), candidates)
    assert complete_ranking(parsed, candidates) == ["3", "1", "2"]


# --------------------------------------------------------------------------------------------
# Property-based fuzz: 5,000 mutated + 3,000 random + 2,500 truncated = 10,500 generated outputs,
# nearly all malformed, plus 2,000 near misses in the reference check further down.
# --------------------------------------------------------------------------------------------

item_id = st.text(alphabet=ID_CHARS, min_size=1, max_size=8)
# Generating long unique lists is slow, so most lists are aliases or prefix + counter ids
# ("v0".."v29": many ids are prefixes of others); short free-form lists cover odd shapes.
candidate_lists = st.one_of(
    st.integers(1, 30).map(lambda k: ALIASES[:k]),
    st.builds(
        lambda prefix, k: [f"{prefix}{i}" for i in range(k)],
        st.text(alphabet=ID_CHARS, min_size=1, max_size=3),
        st.integers(1, 30),
    ),
    st.lists(item_id, min_size=1, max_size=6, unique=True),
)
SEPARATORS = [", ", ",", " ", "\n", " ,\n ", "\t", " , "]
PADS = ["", " ", "\n", "\n\n", " \t"]
reasoning_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="<"), max_size=40
)
noise = st.one_of(
    st.text(max_size=6),
    st.sampled_from(TAGS + ["[", "]", ",", "'", '"', "<", ">", "\u200b", "\u00a0", "é", "🙂", "\x00", "99"]),
)


@st.composite
def well_formed(draw):
    """(candidates, order, response): a response the format accepts, with random legal layout."""
    candidates = draw(candidate_lists)
    # Hypothesis pays ~0.07 ms per draw, so the order and layout come from one seeded RNG
    # (a failing example still reproduces: Hypothesis reports the seed).
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    order = rng.sample(candidates, len(candidates))
    quote = rng.choice(["", "'", '"'])
    body = rng.choice(SEPARATORS).join(f"{quote}{cid}{quote}" for cid in order)
    if rng.random() < 0.5:
        body = f"[{body}]"
    head = rng.choice(["<think>", ""])
    lead, between, inner_left, inner_right, tail = (rng.choice(PADS) for _ in range(5))
    response = (
        f"{lead if head else ''}{head}{draw(reasoning_text)}</think>{between}"
        f"<answer>{inner_left}{body}{inner_right}</answer>{tail}"
    )
    return candidates, order, response


ALL_MUTATIONS = (
    "drop", "duplicate", "swap", "insert", "delete_tag", "repeat_tag",
    "truncate", "unicode", "unknown", "edit_body", "glue",
)
# Near misses, weighted to the answer grammar, where an independent parser is most likely to disagree.
NEAR_MISS_MUTATIONS = (
    "edit_body", "edit_body", "edit_body", "glue", "drop", "duplicate", "unknown", "repeat_tag", "insert",
)
_SEPARATOR_RUN = re.compile(r"(?<=[\w'\"#.-])[,\s]+(?=[\w'\"#.-])")


def _mutate(draw, response: str, candidates: list[str], kinds=ALL_MUTATIONS) -> str:
    kind = draw(st.sampled_from(kinds))
    present = [c for c in candidates if c in response]
    if kind in ("drop", "duplicate", "swap", "unknown") and present:
        a = draw(st.sampled_from(present))
        b = draw(st.sampled_from(present))
        if kind == "drop":
            return response.replace(a, "", 1)
        if kind == "duplicate":
            return response.replace(a, f"{a}, {a}", 1)
        if kind == "unknown":
            return response.replace(a, draw(item_id), 1)
        if "\0" in response:
            return response
        return response.replace(a, "\0").replace(b, a).replace("\0", b)
    if kind in ("delete_tag", "repeat_tag"):
        tag = draw(st.sampled_from(TAGS))
        at = response.find(tag)
        if at >= 0:
            replacement = tag * 2 if kind == "repeat_tag" else ""
            return response[:at] + replacement + response[at + len(tag) :]
    if kind == "truncate":
        return response[: draw(st.integers(0, len(response)))]
    open_at, body_end = response.find("<answer>"), response.find("</answer>")
    body_start = open_at + len("<answer>")
    if kind == "edit_body" and open_at >= 0 and body_start <= body_end:
        # Grammar-level edits: stray/trailing commas, lone quotes or brackets, ids run together.
        body = response[body_start:body_end]
        list_start = body_start + len(body) - len(body.lstrip(" \t\n["))
        list_end = body_end - (len(body) - len(body.rstrip(" \t\n]")))
        # List edges are where leading/trailing commas and lone brackets hide; random spots otherwise.
        position = draw(st.one_of(st.sampled_from([list_start, list_end]), st.integers(body_start, body_end)))
        if draw(st.booleans()) and position < body_end:
            return response[:position] + response[position + 1 :]
        return response[:position] + draw(st.sampled_from([",", ",", " ", "'", '"', "[", "]", ", ,"])) + response[position:]
    if kind == "glue" and open_at >= 0 and body_start <= body_end:
        # Remove one separator so two ids touch: "'1', '2'" -> "'1''2'", "1, 2" -> "12".
        body = _SEPARATOR_RUN.sub("", response[body_start:body_end], count=1)
        return response[:body_start] + body + response[body_end:]
    # "insert", "unicode", and any kind that found nothing to act on: add noise somewhere.
    position = draw(st.integers(0, len(response)))
    junk = draw(st.characters() if kind == "unicode" else noise)
    return response[:position] + junk + response[position:]


@st.composite
def mutated(draw):
    """A well-formed response with 1-3 random mutations (most, not all, become invalid)."""
    candidates, _, response = draw(well_formed())
    for _ in range(draw(st.integers(1, 3))):
        response = _mutate(draw, response, candidates)
    return candidates, response


@pytest.mark.parametrize("examples", [500, pytest.param(5000, marks=pytest.mark.slow)], ids=["dev", "full"])
def test_fuzz_mutated_answers(examples):
    """The development loop fuzzes with 500 examples (~1 s), the full suite with 5,000."""

    @settings(max_examples=examples, **FUZZ)
    @given(mutated(), st.booleans())
    def check(case, require_think):
        candidates, response = case
        assert_invariants(response, candidates, parse_ranking(response, candidates, require_think=require_think))

    check()


@settings(max_examples=3000, **FUZZ)
@given(st.one_of(st.text(max_size=200), st.text(alphabet="<>/[]thinkswer,'\" 0123\n", max_size=80)), candidate_lists)
def test_fuzz_random_text(response, candidates):
    assert_invariants(response, candidates, parse_ranking(response, candidates))


@settings(max_examples=2500, **FUZZ)
@given(well_formed(), st.data())
def test_fuzz_truncating_a_valid_answer_before_answer_close_is_never_valid(case, data):
    candidates, order, response = case
    parsed = parse_ranking(response, candidates)
    assert parsed.valid and list(parsed.order) == order
    close_end = response.index("</answer>") + len("</answer>")
    cut = data.draw(st.integers(0, close_end - 1))
    truncated = response[:cut]
    parsed = parse_ranking(truncated, candidates)
    assert_invariants(truncated, candidates, parsed)
    assert not parsed.valid


def test_every_truncation_point_of_one_answer_is_invalid():
    response = answer(ALIASES[::-1])
    close_end = response.index("</answer>") + len("</answer>")
    for cut in range(close_end):
        assert not parse_ranking(response[:cut], ALIASES).valid, cut
    assert parse_ranking(response[:close_end], ALIASES).valid


# --------------------------------------------------------------------------------------------
# Independent reference parser (string splitting, no regex) must agree on valid and order
# --------------------------------------------------------------------------------------------


def reference_parse(response: str, candidates, require_think: bool = True):
    """Return (valid, order); order is None when the reference finds the structure broken."""
    if any(response.count(tag) > 1 for tag in TAGS):
        return False, None
    if response.count("<answer>") != 1 or response.count("</answer>") != 1:
        return False, None
    if require_think and "</think>" not in response:
        return False, None
    head, rest = response.split("<answer>")
    if "</answer>" not in rest:
        return False, None
    body, tail = rest.split("</answer>")
    structure_ok = not tail.strip()
    if "<think>" in head:
        before, head = head.split("<think>")
        if before.strip() or "</think>" not in head:
            return False, None
    if "</think>" in head:
        structure_ok &= not head.split("</think>")[1].strip()
    else:
        structure_ok &= not head.strip()
    if "<think>" in body or "</think>" in body or "<think>" in tail or "</think>" in tail:
        return False, None

    body = body.strip()
    if body.startswith("[") and body.endswith("]") and len(body) >= 2:
        body = body[1:-1]
    tokens = []
    parts = body.split(",")
    if parts == [""] or parts == [body] and not body.strip():
        parts = []
    for part in parts:
        words = part.split()
        if not words:  # empty element: leading, trailing or doubled comma
            structure_ok = False
        for word in words:
            if len(word) >= 3 and word[0] == word[-1] and word[0] in "'\"":
                word = word[1:-1]
            if not word or any(ch not in ID_CHARS for ch in word):
                structure_ok = False
            tokens.append(word)
    if not structure_ok:
        return False, None
    known = set(candidates)
    order = []
    for token in tokens:
        if token in known and token not in order:
            order.append(token)
    valid = all(t in known for t in tokens) and len(tokens) == len(set(tokens)) == len(candidates)
    return valid, order


@st.composite
def near_well_formed(draw):
    candidates, _, response = draw(well_formed())
    if draw(st.integers(0, 3)):  # three in four get one near-miss mutation
        response = _mutate(draw, response, candidates, NEAR_MISS_MUTATIONS)
    return candidates, response


@settings(max_examples=2000, **FUZZ)
@given(near_well_formed(), st.booleans())
def test_reference_parser_agrees(case, require_think):
    candidates, response = case
    parsed = parse_ranking(response, candidates, require_think=require_think)
    ref_valid, ref_order = reference_parse(response, candidates, require_think)
    assert parsed.valid == ref_valid, (parsed.error, parsed.detail)
    if ref_order is not None:
        assert list(parsed.order) == ref_order


def test_reference_parser_is_not_vacuous():
    # Guard against a reference that accepts or rejects everything.
    assert reference_parse(answer(["2", "1"]), ["1", "2"]) == (True, ["2", "1"])
    assert reference_parse(answer(["2", "2"]), ["1", "2"]) == (False, ["2"])
    assert reference_parse("<think>r</think><answer>[2,,1]</answer>", ["1", "2"]) == (False, None)


def test_extra_text_details_name_the_text_and_its_position():
    """The detail a user reads: the first 20 characters of the stray text, its offset, and where."""
    one = parse_ranking("x<answer>[1, 2]</answer>", ["1", "2"], require_think=False)
    assert one.error is ParseError.EXTRA_TEXT
    assert one.detail == "unexpected text 'x<answer>[1, 2]</ans' at char 0 before <answer>"
    assert parse_ranking("  <answer>[1, 2]</answer>", ["1", "2"], require_think=False).valid  # blanks only
    tail = "<think>a</think>\n<answer>[1, 2]</answer> tail"
    assert parse_ranking(tail, ["1", "2"]).detail == f"unexpected text 'tail' at char {tail.index('tail')} after </answer>"


@pytest.mark.parametrize("body,bracket", [("[1, 2", "["), ("1, 2]", "]")])
def test_a_lone_bracket_is_extra_text_at_its_position_and_the_ids_are_still_read(body, bracket):
    response = f"<think></think>\n<answer>{body}</answer>"
    parsed = parse_ranking(response, ["1", "2"])
    assert parsed.error is ParseError.EXTRA_TEXT and parsed.order == ("1", "2")
    assert parsed.detail == f"unbalanced bracket at char {response.index(bracket)}"


def test_format_answer_without_reasoning_has_an_empty_think_block():
    assert format_answer(["3", "1"]) == "<think></think>\n<answer>[3, 1]</answer>"


def test_trailing_comma_detail():
    parsed = parse_ranking("<think></think>\n<answer>[1, 2,]</answer>", ["1", "2"])
    assert parsed.error is ParseError.EXTRA_TEXT and parsed.detail == "trailing comma in answer"


def test_a_non_string_response_is_read_as_its_text():
    class Text:  # e.g. a string-like object a rollout engine hands back
        def __str__(self):
            return format_answer(["2", "1"])

    assert parse_ranking(Text(), ["1", "2"]).order == ("2", "1") and parse_ranking(Text(), ["1", "2"]).valid  # type: ignore[arg-type]
    none = parse_ranking(None, ["1"])  # type: ignore[arg-type]
    assert none.error is ParseError.MISSING_TAGS and "None" not in none.detail


@pytest.mark.parametrize("response,where", [
    ("hi <think>a</think>\n<answer>[1, 2]</answer>", "at char 0 before <think>"),
    ("<think>a</think> x\n<answer>[1, 2]</answer>", "at char 17 between </think> and <answer>"),
])
def test_extra_text_details_say_where_around_the_think_block(response, where):
    parsed = parse_ranking(response, ["1", "2"])
    assert parsed.error is ParseError.EXTRA_TEXT and parsed.detail.endswith(where), parsed.detail
