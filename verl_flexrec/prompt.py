"""The one prompt builder every FlexRec dataset shares (framework-free: no verl import).

A FlexRec prompt is one closed-set ranking task rendered as chat messages::

    [{"role": "system", "content": SYSTEM_PROMPT},
     {"role": "user", "content": <context> + <need> + <candidates> + ANSWER_FORMAT_INSTRUCTION}]

The user message has four parts, in this order:

1. **Context**: the user's interaction history, oldest first (title, category, feedback such as
   "rated 4/5"), optionally preceded by a one-line user profile; or, for product search, the
   search query.
2. **Need**: :attr:`verl_flexrec.needs.Need.instruction`, the explicit need the ranking serves.
3. **Candidates**: one line per candidate, ``ID <id> | <side info>``. The side information shown
   is what the need asks for (:attr:`Need.side_info`): ``title``, ``category``, ``popularity``
   (rendered as e.g. ``1,234 plays in the last day``) and ``product_text``.
4. **Answer format**: :data:`ANSWER_FORMAT_INSTRUCTION`, matching :mod:`verl_flexrec.parsing`.

Candidate ids are compact: with ``id_style="index"`` (the default) they are ``"1"``..``"K"`` in
prompt order. Data prep shuffles the candidates with the seed before numbering them, so a
position carries no information about the gain. ``id_style="item"`` shows the dataset's own item
ids instead (they must be strings of ``[A-Za-z0-9_.#-]``, the parser's id alphabet).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from verl_flexrec.needs import Need

__all__ = [
    "ANSWER_FORMAT_INSTRUCTION",
    "ID_STYLES",
    "SYSTEM_PROMPT",
    "Candidate",
    "HistoryItem",
    "build_messages",
    "candidate_ids",
    "format_count",
    "render_candidate",
]

SYSTEM_PROMPT = (
    "You are a recommender system. You rank a fixed set of candidate items for one user, "
    "following the user's stated need."
)

ANSWER_FORMAT_INSTRUCTION = (
    "First reason step by step inside <think>...</think>. Then give your final ranking inside "
    "<answer>...</answer> as a list of the candidate IDs: list EVERY candidate ID exactly once, "
    "best first, and write each ID exactly as shown after \"ID\" above, for example "
    "<answer>[7, 12, 3]</answer>."
)

ID_STYLES = ("index", "item")

# The parser's id alphabet (verl_flexrec.parsing.ID_ALPHABET), repeated here so that this module
# stays importable on its own.
_ID_PATTERN = re.compile(r"[A-Za-z0-9_.#-]+")


@dataclass(frozen=True)
class Candidate:
    """One candidate as the prompt shows it; empty fields are not rendered."""

    id: str
    title: str = ""
    category: str = ""
    popularity: int | None = None
    product_text: str = ""


@dataclass(frozen=True)
class HistoryItem:
    """One past interaction of the user (no id: only candidates carry ids)."""

    title: str
    category: str = ""
    feedback: str = ""


def format_count(n: int) -> str:
    """``1234`` -> ``"1,234"``."""
    return f"{int(n):,}"


def candidate_ids(item_ids: Sequence[str], style: str = "index") -> list[str]:
    """Ids to show for candidates in prompt order: ``"1".."K"`` or the item ids themselves."""
    if style == "index":
        return [str(i) for i in range(1, len(item_ids) + 1)]
    if style != "item":
        raise ValueError(f"unknown id style {style!r}; choose one of {ID_STYLES}")
    ids = [str(i) for i in item_ids]
    for cid in ids:
        if not _ID_PATTERN.fullmatch(cid):
            raise ValueError(f"item id {cid!r} cannot be shown as a candidate id: use only [A-Za-z0-9_.#-]")
    if len(set(ids)) != len(ids):
        raise ValueError("item ids of the candidates are not unique; use id style 'index'")
    return ids


def render_candidate(candidate: Candidate, side_info: Sequence[str], popularity_unit: str) -> str:
    """``ID 7 | <title> | category: Food | 1,234 plays in the last day``."""
    parts = [f"ID {candidate.id}"]
    for field in side_info:
        if field == "title" and candidate.title:
            parts.append(candidate.title)
        elif field == "product_text" and candidate.product_text:
            parts.append(candidate.product_text)
        elif field == "category" and candidate.category:
            parts.append(f"category: {candidate.category}")
        elif field == "popularity":
            parts.append(_popularity_text(candidate.popularity, popularity_unit))
    return " | ".join(parts)


def _popularity_text(count: int | None, unit: str) -> str:
    """``1,234 plays in the last day``; ``1 play ...`` (the unit's first word loses its plural s)."""
    if count is None:
        return f"unknown {unit}"
    if count == 1:
        first, _, rest = unit.partition(" ")
        unit = (first[:-1] if first.endswith("s") else first) + (f" {rest}" if rest else "")
    return f"{format_count(count)} {unit}"


def _render_history(history: Sequence[HistoryItem], heading: str) -> list[str]:
    if not history:
        return [f"{heading}: none."]
    lines = [f"{heading} (oldest first):"]
    for item in history:
        text = item.title
        if item.category:
            text += f" [{item.category}]"
        if item.feedback:
            text += f" ({item.feedback})"
        lines.append(f"- {text}")
    return lines


def build_messages(
    need: Need,
    candidates: Sequence[Candidate],
    *,
    history: Sequence[HistoryItem] = (),
    query: str | None = None,
    user_profile: str | None = None,
    item_noun: str = "item",
    history_heading: str = "My history",
    popularity_unit: str = "plays in the last day",
    system_prompt: str = SYSTEM_PROMPT,
) -> list[dict[str, str]]:
    """Render one ranking task as ``[system, user]`` chat messages.

    Args:
        need: the need to serve; its instruction and ``side_info`` decide what is shown.
        candidates: in prompt order, with the ids the model must output.
        history: past interactions (ignored when ``query`` is given).
        query: a search query; replaces the history as the context (product search).
        user_profile: optional one-line description of the user, shown before the history.
        item_noun: what an item is called ("video", "movie", "product").
        history_heading: heading of the history block.
        popularity_unit: text after the popularity count ("plays in the last day").
    """
    if not candidates:
        raise ValueError("build_messages: no candidates")
    lines: list[str] = []
    if query is not None:
        lines.append(f"My search query: {query}")
    else:
        if user_profile:
            lines.append(f"About me: {user_profile}")
        lines.extend(_render_history(history, history_heading))
    lines.append("")
    lines.append(f"My need: {need.instruction}")
    lines.append("")
    lines.append(f"Candidate {item_noun}s ({len(candidates)}):")
    lines.extend(render_candidate(c, need.side_info, popularity_unit) for c in candidates)
    lines.append("")
    lines.append(
        f"Rank all {len(candidates)} candidate {item_noun}s for my need. {ANSWER_FORMAT_INSTRUCTION}"
    )
    return [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": "\n".join(lines)},
    ]
