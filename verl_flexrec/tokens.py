"""Map character spans of a decoded response back to the response's own tokens.

The reward manager knows where each ranked id sits in the *decoded text*; the estimator needs the
*token* positions. Fast path: re-tokenise the decoded text with the tokenizer's offsets and, when
that reproduces the generated ids (the usual case), use those offsets. Sampling can produce a
non-canonical tokenisation, so the fallback measures each token's end offset by decoding growing
prefixes (exact, O(L^2) decode work, only taken when the fast path does not apply).
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["token_char_offsets", "char_spans_to_token_spans"]


def token_char_offsets(tokenizer, token_ids: Sequence[int], text: str) -> list[tuple[int, int]]:
    """``[start, end)`` character offsets in ``text`` of every id in ``token_ids``.

    ``text`` must be ``tokenizer.decode(token_ids, skip_special_tokens=True)``; special tokens
    (EOS, padding) get the empty span at their position.
    """
    ids = [int(t) for t in token_ids]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    kept = [i for i, t in enumerate(ids) if t not in special]
    offsets: list[tuple[int, int]] | None = None
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
