"""Translate verl's (vLLM-style) sampling parameters into ``transformers.generate`` arguments.

Pure functions, no verl import. The agent loop sends ``temperature``, ``top_p``, ``top_k``
(``-1`` = off), ``repetition_penalty``, ``logprobs`` and optionally ``max_tokens`` /
``max_new_tokens``, ``ignore_eos``, ``stop_token_ids``; validation sends temperature 0 for
greedy decoding.
"""

from __future__ import annotations

from typing import Any


def max_new_tokens(prompt_len: int, sampling_params: dict[str, Any], *, response_length: int,
                   prompt_length: int, max_model_len: int | None) -> int:
    """Tokens to generate, as verl's vLLM server computes them.

    ``n = sampling_params.max_tokens`` (or ``max_new_tokens``) if given, else
    ``min(response_length, prompt_length + response_length - prompt_len)``; then clamped to
    ``[1, max_model_len - prompt_len]`` (``max_model_len`` defaults to
    ``prompt_length + response_length``).
    """
    limit = (max_model_len or (prompt_length + response_length)) - prompt_len
    if limit < 1:
        raise ValueError(
            f"prompt of {prompt_len} tokens leaves no room to generate within max_model_len "
            f"{max_model_len or prompt_length + response_length}"
        )
    if sampling_params.get("max_tokens") is not None:
        n = int(sampling_params["max_tokens"])
    elif sampling_params.get("max_new_tokens") is not None:
        n = int(sampling_params["max_new_tokens"])
    else:
        n = min(response_length, prompt_length + response_length - prompt_len)
    return max(1, min(n, limit))


def generation_kwargs(sampling_params: dict[str, Any], eos_token_ids: list[int], pad_token_id: int) -> dict:
    """``generate`` keyword arguments for one request.

    temperature <= 0 -> greedy; otherwise multinomial sampling with ``temperature``, ``top_p``
    (1.0 = off) and ``top_k`` (<= 0 = off). ``ignore_eos`` drops the EOS stop; extra
    ``stop_token_ids`` are added to it.
    """
    temperature = float(sampling_params.get("temperature", 1.0) or 0.0)
    stops = [] if sampling_params.get("ignore_eos") else list(eos_token_ids)
    stops += [int(t) for t in (sampling_params.get("stop_token_ids") or []) if int(t) not in stops]
    kwargs: dict[str, Any] = {
        "pad_token_id": pad_token_id,
        "eos_token_id": stops or None,
        "repetition_penalty": float(sampling_params.get("repetition_penalty", 1.0) or 1.0),
    }
    if temperature <= 0.0:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs
    top_k = int(sampling_params.get("top_k", -1) if sampling_params.get("top_k") is not None else -1)
    top_p = float(sampling_params.get("top_p", 1.0) if sampling_params.get("top_p") is not None else 1.0)
    kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=max(0, top_k))
    return kwargs
