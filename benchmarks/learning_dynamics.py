"""Learning dynamics of item-level credit: GRPO vs Rank-GRPO vs FlexRec swap rewards (simulation).

    python benchmarks/learning_dynamics.py            # default: 3 seeds, dense + sparse (896 s measured on a shared 2-core box)
    python benchmarks/learning_dynamics.py --smoke    # seconds: tiny sizes, 2 seeds, for CI

A pointer policy (``benchmarks/sim/policy.py``) emits a permutation of K candidates item by item
in a synthetic need-conditioned environment (``benchmarks/sim/env.py``). Every step samples
``--prompts`` episodes x ``--group`` rollouts, computes advantages with **the registered ``flexrec``
estimator** (``core_algos.get_adv_estimator_fn("flexrec")``, the function the verl plugin
registers; with only the 4 standard arguments it is verl's GRPO), and updates the policy with
verl's ``vanilla`` PPO policy loss (``core_algos.get_policy_loss_fn``). Each emitted item is one
"token" (``item_token_pos[b, t] = t``). Methods:

dense (true gains):
    grpo                 list NDCG as the sequence reward, GRPO advantage on every item (Rec-R1)
    rank_grpo            Rank-GRPO per-rank reward DCG@k:K / IDCG, normalised per rank
    flexrec_causal       FlexRec causal swap reward (paper default)
    flexrec_noncausal    swap partners = all other positions (Table 7 ablation)
    flexrec_independent  the item's own NDCG term (Table 7 ablation)
sparse (10 % observed, the rest filled; Table 8):
    grpo                 list NDCG of the filled gains
    flexrec_unc          causal swap + uncertainty scale 1/(u+eps), noisy calibrated filler
    flexrec_raw          same without the uncertainty scale ("raw critic")
    flexrec_user_knn     User-KNN filler + uncertainty scale
    flexrec_item_knn     Item-KNN filler + uncertainty scale

Evaluation: greedy decoding on held-out episodes, true gains, NDCG@5 and Recall@5; mean and 95 %
t-interval over seeds per eval step; steps-to-reach = first eval step at which a method's mean
NDCG@5 reaches GRPO's final mean NDCG@5 (same setting). Writes
``benchmarks/results/learning_dynamics.json`` and ``learning_dynamics.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sim import EnvConfig, PointerPolicy, RankingEnv, rank_metrics
from verl.trainer.ppo import core_algos
from verl.workers.config.actor import ActorConfig

import verl_flexrec.register  # noqa: F401  (registers the `flexrec` estimator in verl)
from verl_flexrec.ranking import ndcg, swap_item_rewards
from verl_flexrec.uncertainty import rollout_uncertainty

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Method:
    name: str
    item_mode: str | None  # swap_item_rewards mode; None = sequence-level GRPO
    uncertainty: bool = False
    filler: str = "noisy"


DENSE_METHODS = (
    Method("grpo", None),
    Method("rank_grpo", "rank"),
    Method("flexrec_causal", "causal"),
    Method("flexrec_noncausal", "noncausal"),
    Method("flexrec_independent", "independent"),
)
SPARSE_METHODS = (
    Method("grpo", None),
    Method("flexrec_unc", "causal", uncertainty=True),
    Method("flexrec_raw", "causal", uncertainty=False),
    Method("flexrec_user_knn", "causal", uncertainty=True, filler="user_knn"),
    Method("flexrec_item_knn", "causal", uncertainty=True, filler="item_knn"),
)


def advantages(method: Method, gains_ranked: torch.Tensor, var_ranked: torch.Tensor, index: np.ndarray):
    """Token (= emitted item) advantages ``(bs, K)`` from the registered ``flexrec`` estimator."""
    estimator = core_algos.get_adv_estimator_fn("flexrec")
    bs, K = gains_ranked.shape
    mask = torch.ones(bs, K)
    seq = ndcg(gains_ranked).to(torch.float32)
    token_rewards = torch.zeros(bs, K)
    token_rewards[:, -1] = seq  # verl puts the sequence reward on the last response token
    cfg = OmegaConf.create({"norm_adv_by_std_in_grpo": True, "flexrec": {"uncertainty": {"enable": method.uncertainty}}})
    if method.item_mode is None:
        adv, _ = estimator(token_rewards, mask, index, cfg)  # == core_algos.compute_grpo_outcome_advantage
        return adv
    kwargs = {
        "item_rewards": swap_item_rewards(gains_ranked, method.item_mode).to(torch.float32),
        "item_token_pos": torch.arange(K).expand(bs, K),
        "seq_reward": seq,
    }
    if method.uncertainty:
        kwargs["uncertainty"] = rollout_uncertainty(var_ranked, gains_ranked).to(torch.float32)
    adv, _ = estimator(token_rewards, mask, index, cfg, **kwargs)
    return adv


def evaluate(policy: PointerPolicy, test) -> dict[str, float]:
    perm, _ = policy.sample(test.features, greedy=True)
    ranked = torch.gather(test.gains, 1, perm)
    return {k: float(v.mean()) for k, v in rank_metrics(ranked, 5).items()}


def train_run(method: Method, seed: int, args, num_features: int, train, test, bar) -> dict:
    """One policy trained with ``method`` for ``args.steps`` steps; the test curve."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed + 1000)
    policy = PointerPolicy(num_features, d_model=args.d_model)
    opt = torch.optim.Adam(policy.parameters(), lr=args.lr)
    actor_cfg = ActorConfig(strategy="fsdp", rollout_n=args.group, ppo_mini_batch_size=args.prompts, ppo_micro_batch_size_per_gpu=args.prompts)
    loss_fn = core_algos.get_policy_loss_fn("vanilla")
    index = np.repeat(np.arange(args.prompts), args.group).astype(str)
    curve = {"step": [], "ndcg@5": [], "recall@5": []}

    def log(step):
        m = evaluate(policy, test)
        curve["step"].append(step)
        curve["ndcg@5"].append(m["ndcg@5"])
        curve["recall@5"].append(m["recall@5"])

    log(0)
    for step in range(1, args.steps + 1):
        ep = train.take(rng.choice(len(train), args.prompts, replace=False))
        feats = ep.features.repeat_interleave(args.group, 0)
        perm, old_logp = policy.sample(feats, generator=gen)
        gains = torch.gather(ep.train_gains.repeat_interleave(args.group, 0), 1, perm)
        var = torch.gather(ep.train_var.repeat_interleave(args.group, 0), 1, perm)
        adv = advantages(method, gains, var, index)
        mask = torch.ones_like(adv)
        for _ in range(args.ppo_epochs):
            logp = policy.log_probs(feats, perm)
            loss, _ = loss_fn(old_log_prob=old_logp, log_prob=logp, advantages=adv, response_mask=mask, loss_agg_mode="token-mean", config=actor_cfg)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step()
        if step % args.eval_every == 0 or step == args.steps:
            log(step)
        bar.update(1)
    return curve


def t_interval(x: np.ndarray, level: float = 0.95) -> np.ndarray:
    """Half-width of the two-sided t confidence interval of the mean over axis 0."""
    from scipy import stats

    n = x.shape[0]
    if n < 2:
        return np.zeros(x.shape[1:])
    return stats.t.ppf(0.5 + level / 2, n - 1) * x.std(0, ddof=1) / np.sqrt(n)


def summarise(runs: dict[str, list[dict]], baseline: str = "grpo") -> dict:
    out = {}
    steps = runs[baseline][0]["step"]
    target = float(np.mean([r["ndcg@5"][-1] for r in runs[baseline]]))
    for name, seeds in runs.items():
        entry = {"step": steps}
        for metric in ("ndcg@5", "recall@5"):
            x = np.array([r[metric] for r in seeds])
            entry[metric] = {"mean": x.mean(0).tolist(), "ci95": t_interval(x).tolist(), "per_seed": x.tolist()}
        mean = np.array(entry["ndcg@5"]["mean"])
        hit = np.flatnonzero(mean >= target - 1e-12)
        entry["steps_to_reach_grpo_final"] = int(steps[hit[0]]) if len(hit) else None
        final = np.array([r["ndcg@5"][-1] for r in seeds])
        entry["final_ndcg@5"] = [float(final.mean()), float(t_interval(final[:, None])[0])]
        rfinal = np.array([r["recall@5"][-1] for r in seeds])
        entry["final_recall@5"] = [float(rfinal.mean()), float(t_interval(rfinal[:, None])[0])]
        out[name] = entry
    return {"grpo_final_ndcg@5": target, "methods": out}


def run_setting(setting: str, methods, args, bar) -> dict:
    sparse = setting == "sparse"
    runs: dict[str, list[dict]] = {m.name: [] for m in methods}
    for seed in range(args.seeds):
        cfg = EnvConfig(n_users=args.users, n_items=args.items, n_candidates=args.candidates, density=args.density, seed=seed)
        env = RankingEnv(cfg)
        fillers = {m.filler for m in methods} if sparse else {"noisy"}
        data = {}
        for filler in sorted(fillers):
            model = env.fit_filler(filler) if sparse else None
            ep_rng = np.random.default_rng(seed + 7)  # same episodes for every filler
            data[filler] = env.sample_episodes(args.train_prompts, sparse=sparse, filler=filler, rng=ep_rng, filler_model=model)
        test = env.sample_episodes(args.test_prompts, rng=np.random.default_rng(seed + 99))
        for m in methods:
            runs[m.name].append(train_run(m, seed, args, env.num_features, data[m.filler if sparse else "noisy"], test, bar))
    return summarise(runs)


def print_table(setting: str, summary: dict) -> None:
    print(f"\n[{setting}] test NDCG@5 / Recall@5 at the last step (mean ± 95% CI over seeds); "
          f"GRPO final NDCG@5 = {summary['grpo_final_ndcg@5']:.4f}")
    print(f"{'method':22s} {'NDCG@5':>18s} {'Recall@5':>18s} {'steps to GRPO final':>20s}")
    for name, e in summary["methods"].items():
        n, r = e["final_ndcg@5"], e["final_recall@5"]
        s = e["steps_to_reach_grpo_final"]
        print(f"{name:22s} {n[0]:>10.4f} ± {n[1]:.4f} {r[0]:>10.4f} ± {r[1]:.4f} {str(s) if s is not None else 'not reached':>20s}")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(results["settings"])
    fig, axes = plt.subplots(2, len(settings), figsize=(6.5 * len(settings), 8), squeeze=False)
    for col, setting in enumerate(settings):
        for row, metric in enumerate(("ndcg@5", "recall@5")):
            ax = axes[row, col]
            for name, e in results["settings"][setting]["methods"].items():
                x = np.array(e["step"])
                m, ci = np.array(e[metric]["mean"]), np.array(e[metric]["ci95"])
                ax.plot(x, m, label=name, lw=2 if name == "grpo" else 1.3, ls="--" if name == "grpo" else "-")
                ax.fill_between(x, m - ci, m + ci, alpha=0.15)
            ax.set_title(f"{setting}: test {metric.upper()} (mean ± 95% CI, {results['args']['seeds']} seeds)")
            ax.set_xlabel("policy update step")
            ax.set_ylabel(metric.upper())
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="seconds-long run for CI")
    p.add_argument("--settings", default="dense,sparse")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--prompts", type=int, default=16, help="prompts per step")
    p.add_argument("--group", type=int, default=8, help="rollouts per prompt (GRPO group)")
    p.add_argument("--candidates", type=int, default=30)
    p.add_argument("--users", type=int, default=400)
    p.add_argument("--items", type=int, default=800)
    p.add_argument("--density", type=float, default=0.1)
    p.add_argument("--train-prompts", type=int, default=2000)
    p.add_argument("--test-prompts", type=int, default=256)
    p.add_argument("--d-model", type=int, default=48)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--ppo-epochs", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these tiny ops)")
    p.add_argument("--out", type=Path, default=RESULTS / "learning_dynamics.json")
    args = p.parse_args(argv)
    if args.smoke:
        args.seeds, args.steps, args.eval_every, args.prompts, args.group = 2, 4, 2, 4, 4
        args.candidates, args.users, args.items, args.train_prompts, args.test_prompts = 8, 60, 120, 64, 32
        args.d_model, args.density = 16, 0.2
    torch.set_num_threads(args.threads)
    settings = {"dense": DENSE_METHODS, "sparse": SPARSE_METHODS}
    chosen = [s.strip() for s in args.settings.split(",") if s.strip()]
    for s in chosen:
        if s not in settings:
            p.error(f"--settings: unknown setting {s!r}; choose from {sorted(settings)}")
    total = sum(len(settings[s]) for s in chosen) * args.seeds * args.steps
    t0 = time.perf_counter()
    results = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "settings": {}}
    with tqdm(total=total, desc="learning dynamics", unit="step") as bar:
        for s in chosen:
            results["settings"][s] = run_setting(s, settings[s], args, bar)
    results["methods"] = {s: [asdict(m) for m in settings[s]] for s in chosen}
    results["wall_s"] = time.perf_counter() - t0
    results["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": args.threads, "torch": torch.__version__}
    for s in chosen:
        print_table(s, results["settings"][s])
    print(f"\nwall time {results['wall_s']:.1f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    png = args.out.with_suffix(".png")
    plot(results, png)
    print(f"wrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
