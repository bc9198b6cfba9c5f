"""Each rollout's item data in verl's ``reward_extra_info``: fixed-width binary numbers.

The ``flexrec`` reward manager writes, per rollout, beside its scalars:

=========================  =====================================================================
key                        value
=========================  =====================================================================
flexrec_num_items          K, the length of the ranked list (0 for an invalid response)
flexrec_item_rewards_f32   the K item rewards, ranked order: little-endian float32
flexrec_num_item_tokens    T, the response tokens that spell a ranked id
flexrec_item_tokens_i32    T ``(token index, item position k)`` pairs, token indices increasing:
                           little-endian int32
=========================  =====================================================================

The arrays travel as ``str`` holding their raw bytes, one character per byte (latin-1), so the
trainer reads a whole batch with one ``"".join`` and one ``np.frombuffer`` per array — no parsing.
Not numpy arrays or ``bytes``: verl 0.9.1's validation (``process_validation_metrics``) takes the
mean of every ``reward_extra_info`` value that is not a ``str``, and its non-TransferQueue paths
stack each key across rollouts with ``np.array``, so per-rollout arrays of different lengths break
both; a ``str`` is skipped by the first and stacks in the second. A stacked numpy ``str`` array
drops trailing NUL characters: the FlexRec trainer never reads from one (it reads TransferQueue's
per-rollout dicts), and every row's byte count is checked against its count key, so a clipped
value is refused by name, not misread.

Item tokens, not spans: the reward manager expands each id's ``[first, end)`` token span per
rollout (a token shared by two ids belongs to the later one), so the trainer's estimator only
offsets them by row (``verl_flexrec.advantage`` takes them as ``item_tokens``).

Framework-free (numpy and torch, no verl import).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

import numpy as np
import torch

__all__ = [
    "ITEM_DATA_KEYS",
    "ITEM_REWARDS_KEY",
    "ITEM_TOKENS_KEY",
    "NUM_ITEMS_KEY",
    "NUM_ITEM_TOKENS_KEY",
    "collate_flexrec_inputs",
    "decode_item_rewards",
    "decode_item_tokens",
    "encode_item_data",
    "item_token_spans",
]

NUM_ITEMS_KEY = "flexrec_num_items"
ITEM_REWARDS_KEY = "flexrec_item_rewards_f32"
NUM_ITEM_TOKENS_KEY = "flexrec_num_item_tokens"
ITEM_TOKENS_KEY = "flexrec_item_tokens_i32"
ITEM_DATA_KEYS = (NUM_ITEMS_KEY, ITEM_REWARDS_KEY, NUM_ITEM_TOKENS_KEY, ITEM_TOKENS_KEY)

_REWARD = np.dtype("<f4")
_TOKEN = np.dtype("<i4")
_TEXT = "latin-1"  # code points 0..255 <-> bytes 0..255


def _as_text(values, dtype: np.dtype) -> str:
    return np.ascontiguousarray(values, dtype=dtype).tobytes().decode(_TEXT)


def encode_item_data(item_rewards: Sequence[float], token_spans: Sequence[Sequence[int]]) -> dict[str, Any]:
    """The ``reward_extra_info`` entries of one rollout from its item rewards and the
    ``[first, end)`` response-token span of each ranked id (both empty for an invalid response)."""
    if len(token_spans) != len(item_rewards):
        raise ValueError(f"{len(item_rewards)} item rewards but {len(token_spans)} token spans")
    item_of_token: dict[int, int] = {}
    for k, (first, end) in enumerate(token_spans):
        if first < 0:
            raise ValueError(f"token spans must lie in [0, 2**31), got {token_spans[k]} for item {k}")
        for t in range(first, end):
            item_of_token[t] = k  # a token shared by two ids belongs to the later one
    try:
        pairs = np.array([v for pair in sorted(item_of_token.items()) for v in pair], dtype=_TOKEN)
    except OverflowError:
        raise ValueError(f"token spans must lie in [0, 2**31), got a token index {max(item_of_token)}") from None
    return {
        NUM_ITEMS_KEY: len(item_rewards),
        ITEM_REWARDS_KEY: _as_text(item_rewards, _REWARD),
        NUM_ITEM_TOKENS_KEY: len(item_of_token),
        ITEM_TOKENS_KEY: pairs.tobytes().decode(_TEXT),
    }


def _decode(info: Mapping[str, Any], key: str, count_key: str, dtype: np.dtype, width: int, row: Any = 0) -> np.ndarray:
    num = int(info[count_key])
    text = info[key]
    try:
        raw = text.encode(_TEXT) if isinstance(text, str) else None
    except UnicodeEncodeError:
        raw = None
    if raw is None or len(raw) != num * width * dtype.itemsize:
        got = f"{len(text)} characters" if raw is not None else f"{type(text).__name__} {text!r:.40}"
        raise ValueError(
            f"reward_extra_info row {row}: {key} must hold {count_key}={num} x {width} {dtype.name} as a latin-1 str "
            f"of {num * width * dtype.itemsize} characters (verl_flexrec.integration.item_data), got {got}"
        )
    return np.frombuffer(raw, dtype=dtype)


def decode_item_rewards(info: Mapping[str, Any]) -> np.ndarray:
    """float32 ``(K,)`` item rewards of one rollout's ``reward_extra_info``."""
    return _decode(info, ITEM_REWARDS_KEY, NUM_ITEMS_KEY, _REWARD, 1)


def decode_item_tokens(info: Mapping[str, Any]) -> np.ndarray:
    """int32 ``(T, 2)`` ``(token index, item position)`` pairs of one rollout's ``reward_extra_info``."""
    return _decode(info, ITEM_TOKENS_KEY, NUM_ITEM_TOKENS_KEY, _TOKEN, 2).reshape(-1, 2)


def item_token_spans(info: Mapping[str, Any]) -> list[list[int]]:
    """``[first, last + 1)`` token range of each ranked item that has tokens, in item order."""
    tokens = decode_item_tokens(info)
    return [[int(t.min()), int(t.max()) + 1] for k in np.unique(tokens[:, 1]) for t in [tokens[tokens[:, 1] == k, 0]]]


def collate_flexrec_inputs(reward_extra_infos: Sequence[Mapping[str, Any] | None]) -> dict[str, torch.Tensor]:
    """The ``flexrec`` estimator's keyword arguments from each rollout's ``reward_extra_info``.

    ``item_rewards`` ``(bs, K)`` float32 padded with NaN (absent), ``item_tokens`` ``(T, 3)`` int64
    ``(row, token index, item position)`` of every item token of the batch, ``seq_reward`` and
    ``uncertainty`` ``(bs,)``. ``None`` marks a row without item signal (verl's padding, a non-final
    output of a multi-output trajectory): no items, sequence reward NaN, uncertainty 0.
    """
    bs = len(reward_extra_infos)
    rows = [info for info in reward_extra_infos if info is not None]
    present = None if len(rows) == bs else np.array([info is not None for info in reward_extra_infos], dtype=bool)
    counted = slice(None) if present is None else present  # the rows with item data

    def column(key: str, dtype, absent) -> np.ndarray:  # one value per row; `absent` on None rows
        values = np.fromiter(map(itemgetter(key), rows), dtype, len(rows))
        if present is None:
            return values
        out = np.full(bs, absent, dtype=dtype)
        out[present] = values
        return out

    num_items, num_tokens = column(NUM_ITEMS_KEY, np.int64, 0), column(NUM_ITEM_TOKENS_KEY, np.int64, 0)
    seq, u = column("flexrec_seq_reward", np.float32, np.nan), column("flexrec_uncertainty", np.float32, 0.0)
    reward_texts, token_texts = list(map(itemgetter(ITEM_REWARDS_KEY), rows)), list(map(itemgetter(ITEM_TOKENS_KEY), rows))
    try:  # each row's length against its count, then the whole batch in one read per array
        ok = all(
            np.array_equal(np.fromiter(map(len, texts), np.int64, len(rows)), counts[counted] * width)
            for texts, counts, width in ((reward_texts, num_items, _REWARD.itemsize), (token_texts, num_tokens, 2 * _TOKEN.itemsize))
        )
        rewards = np.frombuffer("".join(reward_texts).encode(_TEXT), dtype=_REWARD)
        pairs = np.frombuffer("".join(token_texts).encode(_TEXT), dtype=_TOKEN)
    except (TypeError, UnicodeEncodeError, ValueError):
        ok = False
    if not ok:  # find the row and say what is wrong with it
        for i, info in enumerate(reward_extra_infos):
            if info is not None:
                _decode(info, ITEM_REWARDS_KEY, NUM_ITEMS_KEY, _REWARD, 1, row=i)
                _decode(info, ITEM_TOKENS_KEY, NUM_ITEM_TOKENS_KEY, _TOKEN, 2, row=i)
        raise ValueError("reward_extra_info: the item data does not add up to its counts")
    k_max = int(num_items.max()) if bs else 0
    if len(rewards) == bs * k_max:  # every list full length: the rows as they come
        item_rewards = rewards.reshape(bs, k_max).copy()
    else:  # row-major boolean assignment fills each row's first num_items[i] cells, rows in order
        item_rewards = np.full((bs, k_max), np.nan, dtype=np.float32)
        item_rewards[np.arange(k_max)[None, :] < num_items[:, None]] = rewards
    # (T, 3) as the transpose of a (3, T) array: each column is contiguous for the estimator
    item_tokens = np.empty((3, len(pairs) // 2), dtype=np.int64)
    item_tokens[0] = np.repeat(np.arange(bs), num_tokens)
    item_tokens[1], item_tokens[2] = pairs[0::2], pairs[1::2]
    return {
        "item_rewards": torch.from_numpy(item_rewards),
        "item_tokens": torch.from_numpy(item_tokens).T,
        "seq_reward": torch.from_numpy(seq),
        "uncertainty": torch.from_numpy(u),
    }
