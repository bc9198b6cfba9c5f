"""Token offsets of long non-canonical responses by windowed decoding (``verl_flexrec.tokens`` step 3).

The reference is the definition: token ``i`` ends where ``decode(ids[:i+1])`` ends (step 4,
restated here). Checked on tokenizers whose decoding is not piecewise, with responses long enough
for many windows: the tiny byte-level BPE with multi-byte characters split into single bytes, and a
SentencePiece-style tokenizer (``▁`` word boundaries whose decoder drops the text's leading space,
with byte fallback). A tokenizer whose decoding depends on more than the window's context must
fall back to prefix decoding and still be exact.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    trainers,
)
from transformers import PreTrainedTokenizerFast

from verl_flexrec import tokens
from verl_flexrec.testing import build_tiny_tokenizer
from verl_flexrec.tokens import token_char_offsets

WORDS = ["user", "liked", "comedy", "é", "日本", "🎬", "  ", "\n", ",", "[", "7", "12", "v1429", "ok!", "naïve"]


def prefix_offsets(tokenizer, ids, text):
    out, prev = [], 0
    for i in range(len(ids)):
        end = min(max(len(tokenizer.decode(ids[: i + 1], skip_special_tokens=True)), prev), len(text))
        out.append((prev, end))
        prev = end
    return out


def _split_to_chars(tokenizer, ids, rng, p):
    """Each token, with probability p, as the tokens of its single characters (bytes, for byte-level BPE)."""
    out = []
    for t in ids:
        chars = tokenizer.convert_ids_to_tokens(t)
        parts = tokenizer.convert_tokens_to_ids(list(chars))
        out += parts if len(chars) > 1 and rng.random() < p and None not in parts and tokenizer.unk_token_id not in parts else [t]
    return out


@pytest.fixture(scope="module")
def byte_level(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def sentencepiece_like():
    """BPE over ``▁``-marked words with byte fallback; the decoder (Llama's) strips the leading space."""
    corpus = [" ".join(np.random.default_rng(i).choice(WORDS, 30)) for i in range(200)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Split("▁", "merged_with_next")
    bytes_ = [f"<0x{b:02X}>" for b in range(256)]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "</s>", *bytes_]))
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", clean_up_tokenization_spaces=False)


def _response(tokenizer, rng, n_words, split):
    text = " ".join(rng.choice(WORDS, n_words)) + " [" + ", ".join(str(i) for i in rng.permutation(30) + 1) + "]"
    ids = tokenizer.encode(text, add_special_tokens=False)
    return _split_to_chars(tokenizer, ids, rng, split) + [tokenizer.eos_token_id] * int(rng.integers(0, 2))


@pytest.mark.parametrize("vocab", ["byte_level", "sentencepiece_like"])
def test_windowed_offsets_equal_prefix_decoding_on_long_responses(vocab, request):
    tokenizer = request.getfixturevalue(vocab)
    windows = 0
    for seed in range(8):
        rng = np.random.default_rng(seed)
        ids = _response(tokenizer, rng, int(rng.integers(40, 200)), split=0.3)
        text = tokenizer.decode(ids, skip_special_tokens=True)
        want = prefix_offsets(tokenizer, ids, text)
        assert tokens._offsets_by_window_decoding(tokenizer, ids, len(text)) == want
        assert token_char_offsets(tokenizer, ids, text) == want
        windows += len(ids) > tokens._BLOCK + tokens._CONTEXT
    assert windows >= 6  # long enough for windows that do not start at token 0


def test_the_responses_here_need_the_windows(sentencepiece_like, byte_level):
    """Neither cheaper path handles them: the pieces do not join to the text (leading space,
    split characters), and re-tokenising the text gives other ids."""
    for tokenizer in (sentencepiece_like, byte_level):
        ids = _response(tokenizer, np.random.default_rng(0), 120, split=0.3)
        text = tokenizer.decode(ids, skip_special_tokens=True)
        assert tokens._offsets_from_pieces(tokenizer, ids, text) is None
        assert tokenizer.encode(text, add_special_tokens=False) != [i for i in ids if i != tokenizer.eos_token_id]


class NonLocal:
    """A tokenizer whose decoding depends on the whole sequence: runs of spaces collapse once it
    holds more than 40 tokens. Windows never hold that many; the checks must catch it."""

    all_special_ids: list[int] = []

    def __init__(self, inner):
        self.inner = inner

    def decode(self, ids, skip_special_tokens=True):
        text = self.inner.decode(ids, skip_special_tokens=skip_special_tokens)
        return re.sub(" +", " ", text) if len(ids) > 40 else text

    def __call__(self, *args, **kwargs):
        raise NotImplementedError


def test_a_non_local_decoder_falls_back_to_prefix_decoding(byte_level, monkeypatch):
    tokenizer = NonLocal(byte_level)
    ids = _response(byte_level, np.random.default_rng(1), 150, split=0.3)
    text = tokenizer.decode(ids)
    calls = []
    original = tokens._offsets_by_prefix_decoding
    monkeypatch.setattr(tokens, "_offsets_by_prefix_decoding", lambda *a: calls.append(1) or original(*a))
    assert tokens._offsets_by_window_decoding(tokenizer, ids, len(text)) is None
    assert token_char_offsets(tokenizer, ids, text) == prefix_offsets(tokenizer, ids, text)
    assert calls == [1]
    assert prefix_offsets(tokenizer, ids, text) != prefix_offsets(byte_level, ids, byte_level.decode(ids, skip_special_tokens=True))
