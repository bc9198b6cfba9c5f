"""Parse the ranking an LLM writes for a FlexRec prompt.

Response format
===============
The model writes its reasoning, then the ranking::

    <think> ...free text... </think>
    <answer>[7, 12, 3, ..., 21]</answer>

Rules, all checked by :func:`parse_ranking`:

* **Candidate ids** are the strings passed as ``candidate_ids`` (data prep uses the aliases
  ``"1"``..``"30"`` by default, or dataset item ids such as ``"v1429"``). An id is a run of
  ``[A-Za-z0-9_.#-]``.
* **Tags.** ``</think>``, ``<answer>`` and ``</answer>`` appear exactly once each, in that order.
  The leading ``<think>`` may be absent, because chat templates sometimes prefill it in the prompt;
  when present it appears once, before ``</think>``, with only whitespace before it. If neither
  think tag is present, only whitespace may precede ``<answer>``. With ``require_think=False``
  the whole think block is optional (``</think>`` may be absent).
* **Between blocks.** Only whitespace between ``</think>`` and ``<answer>`` and after
  ``</answer>``. Tags are matched literally and case-sensitively, anywhere in the response, so a
  tag quoted inside the reasoning counts as a repeated tag.
* **Answer body.** Optional surrounding ``[`` ... ``]`` (both or neither). Ids are separated by
  whitespace and/or one comma; no leading, trailing or doubled comma. An id may be wrapped in
  single or double quotes (``'7'``, ``"7"``). Anything else is extra text. An empty body is
  a well-formed list that leaves every candidate out.
* **Valid** means well-formed and a permutation of ``candidate_ids``.

Errors (one per response, highest precedence first)
---------------------------------------------------
``truncated``     an opened ``<think>`` or ``<answer>`` in the response never closes. A response
                  cut off inside a prefilled think block has no tags at all and therefore reads
                  as ``missing_tags``; the caller knows from the token count whether it was cut.
``missing_tags``  a required tag is absent, repeated, or out of order.
``extra_text``    text where only ids, separators, brackets or whitespace may stand.
``unknown_id``    an id-shaped token that is not a candidate.
``duplicate_id``  a candidate listed twice.
``missing_ids``   a well-formed list without some candidates (including an empty list).

Even an invalid result carries ``order``/``spans`` for every known id read from the answer body
(first occurrences, in order), so rewards can give partial credit and map ids to tokens; they are
empty when no closed answer block is found.

The parser runs in the RL reward hot path: one pass of precompiled regexes over the response, and
set look-ups for ids, so it is linear in the response length.
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

__all__ = [
    "ID_ALPHABET",
    "ParseError",
    "ParsedRanking",
    "complete_ranking",
    "format_answer",
    "parse_ranking",
]

ID_ALPHABET = "A-Za-z0-9_.#-"
"""Characters allowed in a candidate id, as a regex character-class body."""

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

_VALID_ID = re.compile(rf"[{ID_ALPHABET}]+")
_TAG = re.compile(r"</?(?:think|answer)>")
_NON_SPACE = re.compile(r"\S")
# One token of the answer body per match; the final `.` makes every character belong to a token,
# so a single finditer pass covers the body with no backtracking.
_ANSWER_TOKEN = re.compile(
    rf"""
      (?P<space>\s+)
    | (?P<comma>,)
    | "(?P<double_quoted>[{ID_ALPHABET}]+)"
    | '(?P<single_quoted>[{ID_ALPHABET}]+)'
    | (?P<bare>[{ID_ALPHABET}]+)
    | (?P<junk>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_SNIPPET_CHARS = 20


class ParseError(str, enum.Enum):
    """Why a response is not a valid ranking; see the module docstring for the precedence."""

    MISSING_TAGS = "missing_tags"
    TRUNCATED = "truncated"
    EXTRA_TEXT = "extra_text"
    UNKNOWN_ID = "unknown_id"
    DUPLICATE_ID = "duplicate_id"
    MISSING_IDS = "missing_ids"


# Lower index wins when several problems are present.
_PRECEDENCE = (
    ParseError.TRUNCATED,
    ParseError.MISSING_TAGS,
    ParseError.EXTRA_TEXT,
    ParseError.UNKNOWN_ID,
    ParseError.DUPLICATE_ID,
    ParseError.MISSING_IDS,
)


@dataclass(frozen=True)
class ParsedRanking:
    """Result of :func:`parse_ranking`.

    Attributes:
        valid: the response is well-formed and its answer is a permutation of the candidates.
        order: known candidate ids read from the answer body, first occurrences, in order.
        spans: ``(start, end)`` in the response of each id in ``order``
            (``response[start:end] == id``; quotes excluded).
        error: the highest-precedence problem, ``None`` iff ``valid``.
        detail: short human-readable reason, ``None`` iff ``valid``.
        answer_span: ``(start, end)`` of the text between ``<answer>`` and ``</answer>``,
            ``None`` when no closed answer block is found.
    """

    valid: bool
    order: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]
    error: ParseError | None
    detail: str | None
    answer_span: tuple[int, int] | None


class _Problems:
    """Keeps the first detail seen for each error code, then reports the highest-precedence one."""

    def __init__(self) -> None:
        self._details: dict[ParseError, str] = {}

    def add(self, error: ParseError, detail: str) -> None:
        self._details.setdefault(error, detail)

    def has(self, error: ParseError) -> bool:
        return error in self._details

    def worst(self) -> tuple[ParseError | None, str | None]:
        for error in _PRECEDENCE:
            if error in self._details:
                return error, self._details[error]
        return None, None


def _snippet(text: str, start: int) -> str:
    return repr(text[start : start + _SNIPPET_CHARS])


def _check_candidates(candidate_ids: Sequence[str]) -> tuple[str, ...]:
    """Return the candidates as a tuple; raise ValueError for a malformed list (a caller bug)."""
    candidates = tuple(candidate_ids)
    if not candidates:
        raise ValueError("parse_ranking: candidate_ids is empty (programming error in the caller)")
    for cid in candidates:
        if not isinstance(cid, str) or not _VALID_ID.fullmatch(cid):
            raise ValueError(
                f"parse_ranking: candidate id {cid!r} is not a non-empty string of "
                f"[{ID_ALPHABET}] (programming error in the caller)"
            )
    if len(set(candidates)) != len(candidates):
        duplicates = sorted(cid for cid, count in Counter(candidates).items() if count > 1)
        raise ValueError(
            f"parse_ranking: candidate_ids has duplicates {duplicates[:5]} (programming error in the caller)"
        )
    return candidates


def _require_blank(response: str, start: int, end: int, where: str, problems: _Problems) -> None:
    """Record extra_text if response[start:end] holds anything but whitespace."""
    if start >= end:
        return
    found = _NON_SPACE.search(response, start, end)
    if found:
        problems.add(
            ParseError.EXTRA_TEXT,
            f"unexpected text {_snippet(response, found.start())} at char {found.start()} {where}",
        )


def _tag_positions(response: str) -> dict[str, list[int]]:
    """Start offset of every occurrence of each tag, in document order."""
    positions: dict[str, list[int]] = {THINK_OPEN: [], THINK_CLOSE: [], ANSWER_OPEN: [], ANSWER_CLOSE: []}
    for match in _TAG.finditer(response):
        positions[match.group()].append(match.start())
    return positions


def _check_tag_structure(positions: dict[str, list[int]], require_think: bool, problems: _Problems) -> None:
    """Record truncated (unclosed block) and missing_tags (absent, repeated or out-of-order tag)."""
    # An opening tag whose last occurrence has no closing tag after it was cut off mid-block.
    for open_tag, close_tag in ((THINK_OPEN, THINK_CLOSE), (ANSWER_OPEN, ANSWER_CLOSE)):
        opens, closes = positions[open_tag], positions[close_tag]
        if opens and not (closes and closes[-1] > opens[-1]):
            problems.add(ParseError.TRUNCATED, f"{open_tag} opened at char {opens[-1]} never closes")

    for tag, found in positions.items():
        if len(found) > 1:
            problems.add(ParseError.MISSING_TAGS, f"{tag} appears {len(found)} times")
    required = (THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE) if require_think else (ANSWER_OPEN, ANSWER_CLOSE)
    for tag in required:
        if not positions[tag]:
            problems.add(ParseError.MISSING_TAGS, f"missing {tag}")

    # First occurrences must follow the order of `positions` (document order); absent tags skipped.
    firsts = [(tag, found[0]) for tag, found in positions.items() if found]
    for (tag_a, pos_a), (tag_b, pos_b) in zip(firsts, firsts[1:]):
        if pos_a > pos_b:
            problems.add(ParseError.MISSING_TAGS, f"{tag_b} at char {pos_b} comes before {tag_a} at char {pos_a}")


def _answer_body_span(positions: dict[str, list[int]]) -> tuple[int, int] | None:
    """Text between the first <answer> and the first </answer> after it, if both exist."""
    if not positions[ANSWER_OPEN]:
        return None
    body_start = positions[ANSWER_OPEN][0] + len(ANSWER_OPEN)
    body_end = next((pos for pos in positions[ANSWER_CLOSE] if pos >= body_start), None)
    return None if body_end is None else (body_start, body_end)


def _check_between_blocks(
    response: str, positions: dict[str, list[int]], answer_span: tuple[int, int], problems: _Problems
) -> None:
    """Record extra_text outside the blocks. Assumes each tag occurs at most once, in order."""
    answer_tag_start = positions[ANSWER_OPEN][0]
    think_open, think_close = positions[THINK_OPEN], positions[THINK_CLOSE]
    if think_open:
        _require_blank(response, 0, think_open[0], f"before {THINK_OPEN}", problems)
    elif not think_close:
        _require_blank(response, 0, answer_tag_start, f"before {ANSWER_OPEN}", problems)
    # (no <think> but a </think>: everything before </think> is prefilled reasoning, anything goes)
    if think_close:
        _require_blank(
            response, think_close[0] + len(THINK_CLOSE), answer_tag_start,
            f"between {THINK_CLOSE} and {ANSWER_OPEN}", problems,
        )
    _require_blank(response, answer_span[1] + len(ANSWER_CLOSE), len(response), f"after {ANSWER_CLOSE}", problems)


def _strip_brackets(response: str, start: int, end: int, problems: _Problems) -> tuple[int, int]:
    """Return the list region of the answer body: inside the brackets if the body has both."""
    first = _NON_SPACE.search(response, start, end)
    if first is None:
        return start, end
    last = len(response[start:end].rstrip()) + start - 1
    opens = response[first.start()] == "["
    closes = response[last] == "]" and last > first.start()
    if opens and closes:
        return first.start() + 1, last
    if opens != closes:
        pos = first.start() if opens else last
        problems.add(ParseError.EXTRA_TEXT, f"unbalanced bracket at char {pos}")
        # Skip the lone bracket so the ids can still be read.
        return (first.start() + 1, end) if opens else (start, last)
    return start, end


def _read_ids(
    response: str, start: int, end: int, candidates: frozenset[str], problems: _Problems
) -> tuple[list[str], list[tuple[int, int]]]:
    """Tokenise the list region; return known ids (first occurrences) and their spans."""
    order: list[str] = []
    spans: list[tuple[int, int]] = []
    seen: set[str] = set()
    # What the grammar expects next: "first" (an id or the end), "after_id" (separator or end),
    # "after_comma" (an id), "after_space" (comma, id or end).
    expect = "first"
    for token in _ANSWER_TOKEN.finditer(response, start, end):
        kind = token.lastgroup
        pos = token.start()
        if kind == "space":
            if expect == "after_id":
                expect = "after_space"
            continue
        if kind == "comma":
            if expect in ("after_id", "after_space"):
                expect = "after_comma"
            else:
                problems.add(ParseError.EXTRA_TEXT, f"stray comma at char {pos}")
            continue
        if kind == "junk":
            problems.add(ParseError.EXTRA_TEXT, f"unexpected text {_snippet(response, pos)} at char {pos}")
            continue
        # An id, bare or quoted.
        if expect == "after_id":
            problems.add(ParseError.EXTRA_TEXT, f"ids run together at char {pos}")
        expect = "after_id"
        cid = token.group(kind)
        id_start = token.start(kind)
        if cid not in candidates:
            problems.add(ParseError.UNKNOWN_ID, f"unknown id {cid!r} at char {id_start}")
        elif cid in seen:
            problems.add(ParseError.DUPLICATE_ID, f"duplicate id {cid!r} at char {id_start}")
        else:
            seen.add(cid)
            order.append(cid)
            spans.append((id_start, token.end(kind)))
    if expect == "after_comma":
        problems.add(ParseError.EXTRA_TEXT, "trailing comma in answer")
    return order, spans


def parse_ranking(response: str, candidate_ids: Sequence[str], *, require_think: bool = True) -> ParsedRanking:
    """Parse ``response`` (format in the module docstring) against ``candidate_ids``.

    Never raises for any ``str`` response: malformed output is reported through ``error``.
    Raises ``ValueError`` if ``candidate_ids`` is empty, has duplicates, or holds an id outside
    ``[A-Za-z0-9_.#-]`` — that is a bug in the caller, not in the model output.
    """
    candidates = _check_candidates(candidate_ids)
    if not isinstance(response, str):  # e.g. None from a failed rollout: still "malformed output"
        response = "" if response is None else str(response)
    problems = _Problems()
    positions = _tag_positions(response)
    _check_tag_structure(positions, require_think, problems)
    answer_span = _answer_body_span(positions)
    # Block boundaries are only trustworthy when the tag structure is sound.
    tags_ok = not (problems.has(ParseError.TRUNCATED) or problems.has(ParseError.MISSING_TAGS))
    if answer_span is not None and tags_ok:
        _check_between_blocks(response, positions, answer_span, problems)

    order: list[str] = []
    spans: list[tuple[int, int]] = []
    if answer_span is not None:
        list_start, list_end = _strip_brackets(response, *answer_span, problems)
        order, spans = _read_ids(response, list_start, list_end, frozenset(candidates), problems)
        if len(order) < len(candidates):
            ranked = set(order)
            missing = [c for c in candidates if c not in ranked]
            detail = "empty answer" if not order else f"{len(missing)} of {len(candidates)} candidates missing, e.g. {missing[0]!r}"
            problems.add(ParseError.MISSING_IDS, detail)

    error, detail = problems.worst()
    return ParsedRanking(
        valid=error is None,
        order=tuple(order),
        spans=tuple(spans),
        error=error,
        detail=detail,
        answer_span=answer_span,
    )


def format_answer(order: Sequence[str], reasoning: str = "") -> str:
    """Canonical response text: ``"<think>{reasoning}</think>\\n<answer>[a, b, c]</answer>"``.

    ``parse_ranking(format_answer(p), p)`` is valid for every permutation ``p`` of valid ids,
    provided ``reasoning`` contains no think/answer tag.
    """
    return f"{THINK_OPEN}{reasoning}{THINK_CLOSE}\n{ANSWER_OPEN}[{', '.join(order)}]{ANSWER_CLOSE}"


def complete_ranking(parsed: ParsedRanking, candidate_ids: Iterable[str]) -> list[str]:
    """Evaluation policy "append missing": ``parsed.order``, then unranked candidates in prompt order.

    Always returns a permutation of ``candidate_ids``; ids in ``parsed.order`` that are not
    candidates are dropped.
    """
    candidates = list(candidate_ids)
    candidate_set = set(candidates)
    ranked = [cid for cid in parsed.order if cid in candidate_set]
    ranked_set = set(ranked)
    return ranked + [cid for cid in candidates if cid not in ranked_set]
