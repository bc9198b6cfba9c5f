"""Map character spans of a decoded response back to the response's own tokens.

The reward manager knows where each ranked id sits in the *decoded text*; the estimator needs the
*token* positions. Three ways, first applicable wins:

1. pieces: each token id's own decoded text, cached per tokenizer; when the pieces joined are the
   decoded text, token t covers ``[sum(len(p) for p in pieces[:t]), ... + len(pieces[t]))``.
   Exact by construction, no tokenizer call after the first sight of an id. Tokenizers whose
   decode is not piecewise (SentencePiece's leading-space rule, a token holding part of a
   multi-byte character, clean-up of spaces) fail the check and take 2 or 3.
2. re-tokenise the decoded text with the tokenizer's offsets and, when that reproduces the
   generated ids, use those offsets.
3. sampling can produce a non-canonical tokenisation, so the last resort measures each token's
   end offset by decoding growing prefixes (exact, O(L^2) decode work).
"""

from __future__ import annotations

import weakref
from itertools import accumulate, pairwise
from typing import Sequence

__all__ = ["token_char_offsets", "char_spans_to_token_spans"]

# tokenizer -> {token id: its text when decoded alone with skip_special_tokens=True}
_PIECES: weakref.WeakKeyDictionary[object, dict[int, str]] = weakref.WeakKeyDictionary()


def _token_pieces(tokenizer, token_ids: Sequence[int]) -> list[str] | None:
    """Decoded text of each id on its own (cached per tokenizer); None if it cannot be cached."""
    try:
        cache = _PIECES.setdefault(tokenizer, {})
    except TypeError:  # a tokenizer that cannot be weakly referenced: no cache
        return None
    try:  # Python (and numpy) ints hash like the int keys: no conversion on the hot path
        return list(map(cache.__getitem__, token_ids))
    except (KeyError, TypeError):
        ids = list(map(int, token_ids))
        for i in set(ids).difference(cache):
            cache[i] = tokenizer.decode([i], skip_special_tokens=True)
        return list(map(cache.__getitem__, ids))


def _offsets_from_pieces(tokenizer, token_ids: Sequence[int], text: str) -> list[tuple[int, int]] | None:
    pieces = _token_pieces(tokenizer, token_ids)
    if pieces is None or "".join(pieces) != text:
        return None
    bounds = list(accumulate(map(len, pieces), initial=0))
    return list(pairwise(bounds))


def token_char_offsets(tokenizer, token_ids: Sequence[int], text: str) -> list[tuple[int, int]]:
    """``[start, end)`` character offsets in ``text`` of every id in ``token_ids``.

    ``text`` must be ``tokenizer.decode(token_ids, skip_special_tokens=True)``; special tokens
    (EOS, padding) get the empty span at their position.
    """
    offsets = _offsets_from_pieces(tokenizer, token_ids, text)
    if offsets is not None:
        return offsets
    ids = list(map(int, token_ids))
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    kept = [i for i, t in enumerate(ids) if t not in special]
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if list(enc["input_ids"]) == [ids[i] for i in kept]:
            offsets = [tuple(map(int, o)) for o in enc["offset_mapping"]]
    except (NotImplementedError, ValueError, TypeError):  # slow tokenizers have no offsets
        offsets = None
    if offsets is not None:
        out = []
        it = iter(offsets)
        prev_end = 0
        kept_set = set(kept)
        for i in range(len(ids)):
            if i in kept_set:
                span = next(it)
                prev_end = span[1]
                out.append(span)
            else:
                out.append((prev_end, prev_end))
        return out
    return _offsets_by_prefix_decoding(tokenizer, ids, len(text))


def _offsets_by_prefix_decoding(tokenizer, ids: list[int], text_len: int) -> list[tuple[int, int]]:
    out = []
    prev = 0
    for i in range(len(ids)):
        end = len(tokenizer.decode(ids[: i + 1], skip_special_tokens=True))
        end = min(max(end, prev), text_len)  # a split multi-byte char can shrink a prefix
        out.append((prev, end))
        prev = end
    return out


def char_spans_to_token_spans(
    offsets: Sequence[tuple[int, int]], char_spans: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """For each character span, the ``[first, last + 1)`` range of tokens that overlap it.

    Spans must be sorted and non-overlapping (ranked ids appear left to right); linear time.
    A span no token covers maps to ``(t, t)`` (empty).
    """
    result = []
    t = 0
    n = len(offsets)
    for start, end in char_spans:
        while t < n and offsets[t][1] <= start:
            t += 1
        first = t
        last = t
        while last < n and offsets[last][0] < end:
            last += 1
        result.append((first, max(first, last)))
        t = first
    return result
