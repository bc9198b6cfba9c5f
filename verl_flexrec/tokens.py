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
3. sampling can produce a non-canonical tokenisation: then each token's end offset is measured
   by decoding short windows, ``len(decode(ids[s:i+1])) - len(decode(ids[s:a]))`` added to the
   offset of token ``a - 1``, where blocks of 16 tokens starting at ``a`` share a window start
   ``s = a - 8``. The 8 tokens of context absorb what makes decoding non-piecewise (a multi-byte
   character split over up to 4 byte tokens, SentencePiece's leading space, spaces cleaned up
   next to punctuation), and both lengths of a block see the same start, so whatever the start
   does cancels. O(L) decode work (``benchmarks/bench_token_offsets.py`` has the figures for a
   1k-token response). The result is checked against full decodes of the prefixes ending at
   L/4, L/2 and 3L/4 and against the text's length; a tokenizer whose decoding depends on more
   context fails that check and falls back to
4. decoding every prefix: exact, O(L^2).
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
    return _offsets_by_window_decoding(tokenizer, ids, len(text)) or _offsets_by_prefix_decoding(tokenizer, ids, len(text))


_BLOCK = 16  # tokens whose windows share one start
_CONTEXT = 8  # tokens of left context in every window
_CHECKPOINTS = 4


def _decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True)


def _spans(ends: list[int], text_len: int) -> list[tuple[int, int]]:
    """Monotone ``[start, end)`` spans from end offsets (a split multi-byte char can shrink a prefix)."""
    out = []
    prev = 0
    for end in ends:
        end = min(max(end, prev), text_len)
        out.append((prev, end))
        prev = end
    return out


def _window_decoders(tokenizer) -> list:
    """Decoders for the windows, fastest first: the Rust tokenizer's own ``decode`` (a fast
    tokenizer; skips transformers' per-call Python, 3x faster), then ``tokenizer.decode``."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    fast = [lambda ids: backend.decode(ids, skip_special_tokens=True)] if hasattr(backend, "decode") else []
    return [*fast, lambda ids: _decode(tokenizer, ids)]


def _offsets_by_window_decoding(tokenizer, ids: list[int], text_len: int) -> list[tuple[int, int]] | None:
    """Step 3 of the module docstring; None when the checks against full prefix decodes fail."""
    n = len(ids)
    if n == 0:
        return []
    checks = {i: len(_decode(tokenizer, ids[: i + 1])) for i in {n * k // _CHECKPOINTS for k in range(1, _CHECKPOINTS)}}
    checks[n - 1] = text_len
    for decode in _window_decoders(tokenizer):
        ends = [0] * n
        base = 0  # decoded length of ids[:a]
        for a in range(0, n, _BLOCK):
            s = max(0, a - _CONTEXT)
            head = len(decode(ids[s:a])) if a > s else 0
            for i in range(a, min(a + _BLOCK, n)):
                ends[i] = base + len(decode(ids[s : i + 1])) - head
            base = ends[min(a + _BLOCK, n) - 1]
        if all(ends[i] == want for i, want in checks.items()):
            return _spans(ends, text_len)
    return None


def _offsets_by_prefix_decoding(tokenizer, ids: list[int], text_len: int) -> list[tuple[int, int]]:
    """Step 4: the decoded length of every prefix (exact, O(L^2))."""
    return _spans([len(_decode(tokenizer, ids[: i + 1])) for i in range(len(ids))], text_len)


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
