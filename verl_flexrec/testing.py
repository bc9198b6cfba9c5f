"""Tiny tokenizer and model for CPU tests; nothing here touches the Hugging Face hub.

* :func:`build_tiny_tokenizer` trains a byte-level BPE (Qwen2-style pre-tokenizer, so every digit
  is its own token: the alias ``"7"`` is one token, ``"12"`` is two) on a small built-in corpus.
  Vocabulary: 256 byte tokens + BPE merges + special tokens ``<|endoftext|>`` (pad),
  ``<|im_start|>``, ``<|im_end|>`` (eos) + the tags ``<think>``, ``</think>``, ``<answer>``,
  ``</answer>`` as single non-special added tokens (like Qwen3's think tags). ChatML chat template
  in the Qwen2-Instruct style. Offsets mapping is exact (``trim_offsets=False``).
* :func:`build_tiny_model` builds a ~100k-parameter, 2-layer ``Qwen2ForCausalLM`` for it.

Both are deterministic and take well under a second.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers.trainers import BpeTrainer
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

__all__ = [
    "ANSWER_TAGS",
    "CHATML_TEMPLATE",
    "EOS_TOKEN",
    "PAD_TOKEN",
    "SPECIAL_TOKENS",
    "TINY_VOCAB_SIZE",
    "build_tiny_model",
    "build_tiny_tokenizer",
]

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, EOS_TOKEN)
ANSWER_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
TINY_VOCAB_SIZE = 384
"""BPE vocabulary target (byte alphabet + merges + special tokens), before the tag tokens."""

# Qwen2's pre-tokenizer split: single digits, letter runs, punctuation runs, newlines, spaces.
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen2-Instruct's ChatML template: default system prompt, optional generation prompt.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = """\
You are a helpful assistant. You are a recommender system.
The user has watched the following items in order. Each line shows an id, a title and a category.
User history: comedy, drama, action, documentary, music, sports, news, travel, cooking, gaming.
The user's need: find something new and diverse; maximize interest; prefer fresh items.
Candidates: rank all of the candidates below from most to least relevant for this need.
Write your reasoning inside <think> </think> and the ranking inside <answer> </answer>.
<think> The user likes comedy and music, so items 7 and 12 come first. </think>
<answer>[7, 12, 3, 1, 30, 21, 5, 9, 14, 2]</answer>
<think>Item 4 matches the need best because it is new to the user.</think>
<answer>[4, 18, 26, 11, 6, 29, 8, 15, 23, 10, 27, 13]</answer>
<answer>[20, 16, 22, 17, 19, 24, 25, 28]</answer>
system user assistant question answer reason ranking rank order list item items movie video
the a an and or of to in for is it this that with on as by be are was were from at not
0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30
v1429 v88 tt0111161 B00X item_3 #42 [ ] , . : ; ' " ( ) - _ ! ?
Hello! How can I help you today? Please rank these videos for me.
Sure, here is the ranking you asked for, with the most relevant items first.
"""


def _train_bpe() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False, trim_offsets=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=False, use_regex=False, trim_offsets=False)
    # trim_offsets=False keeps leading spaces inside token offsets, so spans map to tokens exactly.
    tokenizer.post_processor = processors.ByteLevel(add_prefix_space=False, use_regex=False, trim_offsets=False)
    trainer = BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Repeat the corpus so merge counts are well separated; training stays single-pass and fast.
    tokenizer.train_from_iterator(_CORPUS.splitlines() * 4, trainer=trainer)
    tokenizer.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in ANSWER_TAGS])
    return tokenizer


def build_tiny_tokenizer(out_dir: str | Path | None = None) -> PreTrainedTokenizerFast:
    """Train the tiny byte-level BPE tokenizer (see module docstring); save to ``out_dir`` if given.

    A saved directory loads with ``AutoTokenizer.from_pretrained`` and ``verl.utils.hf_tokenizer``.
    """
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_bpe(),
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[IM_START, EOS_TOKEN],
        chat_template=CHATML_TEMPLATE,
        clean_up_tokenization_spaces=False,  # the default would alter " ," on decode
        model_max_length=8192,
    )
    if out_dir is not None:
        tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def build_tiny_model(
    tokenizer: PreTrainedTokenizerFast, out_dir: str | Path | None = None, seed: int = 0, *,
    hidden_size: int = 64, num_layers: int = 2,
) -> Qwen2ForCausalLM:
    """A randomly initialised 2-layer Qwen2 (~100k parameters, float32) sized to ``tokenizer``.

    ``hidden_size`` (a multiple of 4; the MLP is twice as wide) and ``num_layers`` make it larger.
    If ``out_dir`` is given, the model and the tokenizer are saved there together, so the
    directory works as a verl ``model.path``. The global torch RNG state is left untouched.
    """
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.pad_token_id,  # Qwen2 convention: bos = <|endoftext|>
        eos_token_id=tokenizer.eos_token_id,
        dtype="float32",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.pad_token_id
    model.eval()
    if out_dir is not None:
        model.save_pretrained(str(out_dir))
        tokenizer.save_pretrained(str(out_dir))
    return model
