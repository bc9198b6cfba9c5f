"""Does FlexRec learn better? Credit-assignment and uncertainty arms on a simulated ranking task.

    python benchmarks/learning_dynamics.py            # default: every setting, 8 seeds (~30 min on 2 cores)
    python benchmarks/learning_dynamics.py --smoke    # seconds: tiny sizes, 2 seeds, for CI
    python benchmarks/learning_dynamics.py --settings dense,sparse --seeds 4 --steps 60   # a quick look

World (``benchmarks/sim/world.py``): need-conditioned ranking with a non-linear target; a
token-level policy (``benchmarks/sim/policy.py``) writes 2 reasoning tokens, then the K candidates'
catalogue ids, two tokens each (an id that is not a remaining candidate makes the output invalid).
Every step samples ``--rollouts`` responses (``rollouts / group`` prompts x ``group``) per seed,
scores them (valid: ``0.1 + NDCG`` or format-only; invalid: -2; item rewards: the package's
``swap_item_rewards``), computes token advantages with **the registered ``flexrec`` estimator**
(``core_algos.get_adv_estimator_fn("flexrec")``; with only verl's 4 standard arguments it is verl's
GRPO) and updates with **verl's ``vanilla`` policy loss** (token-mean). The seeds of an arm are one
batched model (stacked weights), so an arm costs about one run.

Settings (arms in ``SETTINGS``): ``dense`` (K 20, group 8) with the credit-assignment arms;
``dense_K10`` / ``dense_K30`` and ``dense_G4`` / ``dense_G16`` (same rollouts per step) for GRPO
vs FlexRec causal; ``sparse``: observed rewards exact, the rest filled by the project's critic
(``verl_flexrec.critic.train_critic``) or User-KNN, with and without the uncertainty scale.

Per arm and seed: test NDCG@5 / Recall@5 of greedy decoding on held-out prompts (true gains) every
``--eval-every`` steps; AUC = the curve's mean over training; steps to threshold = first
evaluation whose 3-point trailing mean reaches the baseline arm's final value (its last 3
evaluations) in the same seed. Summaries: mean and 95 % t-interval over seeds; paired
differences against the setting's baseline. Writes ``benchmarks/results/learning_dynamics.json``
and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from learning_report import dump_json, markdown_report, plot, print_table, summarise
from sim import (
    SeedBatchedPolicy,
    World,
    WorldConfig,
    item_token_positions,
    rank_metrics,
    stats,
)
from verl.trainer.ppo import core_algos
from verl.workers.config.actor import ActorConfig

import verl_flexrec.register  # noqa: F401  (registers the `flexrec` estimator in verl)
from verl_flexrec.config import FlexRecConfig, RewardOptions, UncertaintyOptions
from verl_flexrec.ranking import ndcg, swap_item_rewards
from verl_flexrec.uncertainty import rollout_uncertainty, uncertainty_scale

RESULTS = ROOT / "benchmarks" / "results"
REWARD = RewardOptions()  # format_bonus 0.1, invalid_penalty -2 (the package's defaults)


@dataclass(frozen=True)
class Arm:
    name: str
    item_mode: str | None = "causal"  # swap_item_rewards mode; None = sequence-only GRPO
    item_norm: str = "position"
    item_std_floor: float | None = None  # None = the package default
    seq_reward: str = "ndcg"  # "ndcg": format_bonus + NDCG; "format": format_bonus only
    filler: str = "oracle"  # sparse: oracle (true gains), critic, user_knn
    normalize: str | None = None  # uncertainty scale normalisation; None = no scaling

    def algorithm_config(self):
        adv = {"item_norm": self.item_norm}
        if self.item_std_floor is not None:
            adv["item_std_floor"] = self.item_std_floor
        unc = {"enable": self.normalize is not None, "normalize": self.normalize or "batch"}
        return OmegaConf.create({"norm_adv_by_std_in_grpo": True, "flexrec": {"advantage": adv, "uncertainty": unc}})


    def effective_options(self) -> dict:
        """The estimator options this arm ran with (package defaults resolved)."""
        cfg = FlexRecConfig.from_any(self.algorithm_config().flexrec)
        return {"advantage": asdict(cfg.advantage), "uncertainty": asdict(cfg.uncertainty), "item_rewards": self.item_mode}


@dataclass(frozen=True)
class Setting:
    name: str
    arms: tuple[Arm, ...]
    K: int = 20
    group: int = 8
    sparse: bool = False
    baseline: str = "grpo"
    note: str = ""


GRPO, CAUSAL = Arm("grpo", None), Arm("flexrec_causal")
SETTINGS = {
    "dense": Setting(
        "dense",
        (
            GRPO,
            Arm("rank_grpo", "rank"),
            CAUSAL,
            Arm("flexrec_noncausal", "noncausal"),
            Arm("flexrec_independent", "independent"),
            Arm("causal_std_floor_1", item_std_floor=1.0),
            Arm("causal_std_floor_0", item_std_floor=0.0),
            Arm("causal_pooled", item_norm="pooled"),
            Arm("causal_none", item_norm="none"),
            Arm("causal_format_only", seq_reward="format"),
        ),
        note="credit assignment, item normalisation, sequence reward of non-item tokens",
    ),
    "dense_K10": Setting("dense_K10", (GRPO, CAUSAL), K=10, note="list length sweep"),
    "dense_K30": Setting("dense_K30", (GRPO, CAUSAL), K=30, note="list length sweep"),
    "dense_G4": Setting("dense_G4", (GRPO, CAUSAL), group=4, note="group size sweep, same rollouts per step"),
    "dense_G16": Setting("dense_G16", (GRPO, CAUSAL), group=16, note="group size sweep, same rollouts per step"),
    "sparse": Setting(
        "sparse",
        (
            Arm("oracle_dense", filler="oracle"),
            Arm("critic_raw", filler="critic"),
            Arm("critic_raw_std_floor_1", filler="critic", item_std_floor=1.0),
            Arm("critic_raw_std_floor_0", filler="critic", item_std_floor=0.0),
            Arm("critic_unc_batch", filler="critic", normalize="batch"),
            Arm("critic_unc_group", filler="critic", normalize="group"),
            Arm("critic_unc_none", filler="critic", normalize="none"),
            Arm("user_knn_unc_batch", filler="user_knn", normalize="batch"),
        ),
        sparse=True,
        baseline="critic_raw",
        note="10% observed (exact), the rest filled; FlexRec causal in every arm",
    ),
}


# -- data -------------------------------------------------------------------------------------
@dataclass
class SeedData:
    """Train / test prompts of every seed, stacked on a leading seed axis."""

    train: dict  # name -> (S, E, ...) tensor
    test: dict
    fills: dict = field(default_factory=dict)  # filler -> {"train_gains", "train_var"} (S, E, K)
    filler_quality: dict = field(default_factory=dict)


def _stack(episodes, names) -> dict:
    return {n: torch.stack([getattr(e, n) for e in episodes]) for n in names}


FIELDS = ("features", "context", "id_prefix", "id_suffix", "gains", "train_gains", "train_var")


def build_data(setting: Setting, args, seeds, log) -> SeedData:
    worlds = [World(replace(args.world, n_candidates=setting.K, seed=s)) for s in seeds]
    train = [w.sample_episodes(args.train_prompts, np.random.default_rng([s, 1])) for w, s in zip(worlds, seeds)]
    test = [w.sample_episodes(args.test_prompts, np.random.default_rng([s, 2])) for w, s in zip(worlds, seeds)]
    data = SeedData(_stack(train, FIELDS), _stack(test, FIELDS))
    if setting.sparse:
        for filler in sorted({a.filler for a in setting.arms} - {"oracle"}):
            filled, quality = [], []
            for w, s, ep in zip(worlds, seeds, train):
                t0 = time.perf_counter()
                episodes, errors = w.fill_episodes(ep, fit_filler(filler, w, s, args))
                filled.append(episodes)
                quality.append(filler_quality(errors) | {"fit_s": time.perf_counter() - t0})
            data.fills[filler] = _stack(filled, ("train_gains", "train_var"))
            data.filler_quality[filler] = {k: stats.mean_ci([q[k] for q in quality]) for k in quality[0]}
            log(f"  [{setting.name}] filler {filler}: " + ", ".join(f"{k} {v['mean']:.3g}" for k, v in data.filler_quality[filler].items()))
    return data


def fit_filler(filler: str, world: World, seed: int, args):
    inter = world.observed_interactions()
    if filler == "critic":
        from verl_flexrec.critic import CriticConfig, train_critic

        cfg = CriticConfig(seed=seed, epochs=args.critic_epochs, ensemble=args.critic_members)
        return train_critic(inter, cfg, progress=False, num_threads=args.threads)
    if filler == "user_knn":
        from verl_flexrec.critic import UserKNNFiller

        return UserKNNFiller().fit(inter)
    raise ValueError(f"unknown filler {filler!r}")


def filler_quality(errors: dict) -> dict:
    """How the filler errs on the unobserved candidates of the training prompts: RMSE, mean bias,
    the spread of the per-category bias (systematic error), and whether its predicted sd tracks
    its error (Pearson correlation of sd with |error|)."""
    err, cat = errors["error"], errors["category"]
    cat_bias = np.array([err[cat == c].mean() for c in np.unique(cat)])
    return {
        "rmse": float(np.sqrt((err**2).mean())),
        "bias": float(err.mean()),
        "category_bias_sd": float(cat_bias.std()),
        "corr_sd_abs_error": stats.pearson(errors["sd"], np.abs(err)),
    }


# -- one arm, all seeds at once ----------------------------------------------------------------
def train_arm(arm: Arm, setting: Setting, data: SeedData, seeds, args, bar) -> dict:
    S, K, G = len(seeds), setting.K, setting.group
    prompts = args.rollouts // G
    B = prompts * G
    world_cfg = replace(args.world, n_candidates=K)
    policy = SeedBatchedPolicy(
        seeds, world_cfg.num_features, world_cfg.num_context, world_cfg.n_prefix, world_cfg.id_base, d_model=args.d_model
    )
    opt = torch.optim.Adam(policy.parameters(), lr=args.lr)
    actor_cfg = ActorConfig(strategy="fsdp", rollout_n=G, ppo_mini_batch_size=prompts, ppo_micro_batch_size_per_gpu=prompts)
    loss_fn = core_algos.get_policy_loss_fn("vanilla")
    estimator = core_algos.get_adv_estimator_fn("flexrec")
    algo_cfg = arm.algorithm_config()
    uopts = UncertaintyOptions(normalize=arm.normalize or "batch")
    pos = item_token_positions(policy.R, K)
    L = len(pos)
    index = np.repeat(np.arange(prompts), G).astype(str)
    gen = torch.Generator().manual_seed(int(seeds[0]) * 7919 + 17)
    train = dict(data.train)
    if arm.filler != "oracle":
        train.update(data.fills[arm.filler])
    E = train["features"].shape[1]
    sidx = torch.arange(S)[:, None]
    curve = {"step": [], "ndcg@5": [], "recall@5": [], "valid_ratio": [], "train_ndcg": []}
    window = {"valid": [], "ndcg": []}
    corr_rows = [[] for _ in range(S)]  # (c, |error|, group) of valid training rollouts

    def evaluate(step):
        t = data.test
        ro = policy.sample(t["features"], t["context"], t["id_prefix"], t["id_suffix"], greedy=True)
        m = _list_metrics(t["gains"].reshape(-1, K), ro.order, ro.valid)
        curve["step"].append(step)
        for k in ("ndcg@5", "recall@5"):
            curve[k].append(m[k].view(S, -1).mean(1).tolist())
        curve["valid_ratio"].append([float(np.mean(v)) if v else float("nan") for v in zip(*window["valid"])] if window["valid"] else [float("nan")] * S)
        curve["train_ndcg"].append([float(np.mean(v)) for v in zip(*window["ndcg"])] if window["ndcg"] else [float("nan")] * S)
        window["valid"].clear()
        window["ndcg"].clear()

    evaluate(0)
    for step in range(1, args.steps + 1):
        pick = torch.stack([torch.as_tensor(np.random.default_rng([s, 3, step]).choice(E, prompts, replace=False)) for s in seeds])
        pick = pick.repeat_interleave(G, 1)  # (S, B): each prompt G times, grouped
        batch = {k: v[sidx, pick] for k, v in train.items()}
        ro = policy.sample(batch["features"], batch["context"], batch["id_prefix"], batch["id_suffix"], generator=gen)
        valid = ro.valid
        order = ro.order.clamp(min=0)
        g_train = torch.gather(batch["train_gains"].reshape(S * B, K), 1, order)
        g_true = torch.gather(batch["gains"].reshape(S * B, K), 1, order)
        ndcg_train, ndcg_true = ndcg(g_train), ndcg(g_true)
        bonus = torch.full_like(ndcg_train, REWARD.format_bonus)
        seq = torch.where(valid, bonus + (ndcg_train if arm.seq_reward == "ndcg" else 0.0), torch.full_like(bonus, REWARD.invalid_penalty))
        u = torch.where(valid, rollout_uncertainty(torch.gather(batch["train_var"].reshape(S * B, K), 1, order), g_train), 0.0)
        items = None
        if arm.item_mode is not None:
            items = swap_item_rewards(g_train, arm.item_mode).to(torch.float32)
            items = torch.where(valid[:, None], items, torch.full_like(items, float("nan")))
        adv = torch.empty(S * B, L)
        mask = torch.ones(B, L)
        for s in range(S):
            rows = slice(s * B, (s + 1) * B)
            tlr = torch.zeros(B, L)
            tlr[:, -1] = seq[rows].float()  # verl puts the sequence reward on the last response token
            if items is None:
                adv[rows], _ = estimator(tlr, mask, index, algo_cfg)  # == verl's GRPO
            else:
                kw = {"item_rewards": items[rows], "item_token_pos": pos.expand(B, L), "seq_reward": seq[rows].float()}
                if arm.normalize is not None:
                    kw["uncertainty"] = u[rows].float()
                adv[rows], _ = estimator(tlr, mask, index, algo_cfg, **kw)
            if arm.filler != "oracle" and step % args.corr_every == 0:
                c = uncertainty_scale(u[rows], eps=uopts.eps, normalize=uopts.normalize, max_scale=uopts.max_scale, index=index)
                err = (ndcg_train[rows] - ndcg_true[rows]).abs()
                v = valid[rows]
                corr_rows[s].append(np.stack([c[v].numpy(), err[v].numpy(), np.arange(B)[v.numpy()] // G + step * prompts], 1))
        for _ in range(args.ppo_epochs):
            logp = policy.log_probs(batch["features"], batch["context"], batch["id_prefix"], batch["id_suffix"], ro)
            loss = sum(
                loss_fn(
                    old_log_prob=ro.log_probs[s * B : (s + 1) * B],
                    log_prob=logp[s * B : (s + 1) * B],
                    advantages=adv[s * B : (s + 1) * B],
                    response_mask=mask,
                    loss_agg_mode="token-mean",
                    config=actor_cfg,
                )[0]
                for s in range(S)
            )
            opt.zero_grad()
            loss.backward()
            policy.clip_grad_norm_per_seed_(args.grad_clip)
            opt.step()
        window["valid"].append(valid.view(S, B).float().mean(1).tolist())
        window["ndcg"].append(torch.where(valid, ndcg_true, 0.0).view(S, B).mean(1).tolist())
        if step % args.eval_every == 0 or step == args.steps:
            evaluate(step)
        bar.update(1)
    out = {"step": curve["step"]}
    for k in ("ndcg@5", "recall@5", "valid_ratio", "train_ndcg"):
        out[k] = np.asarray(curve[k]).T.tolist()  # per seed
    if arm.filler != "oracle":
        out["c_error"] = _c_error_correlation(corr_rows)
    return out


def _list_metrics(gains: torch.Tensor, order: torch.Tensor, valid: torch.Tensor) -> dict:
    """NDCG@5 / Recall@5 of each output on true gains; an invalid output scores 0."""
    m = rank_metrics(torch.gather(gains, 1, order.clamp(min=0)), 5)
    return {k: torch.where(valid, v, torch.zeros_like(v)) for k, v in m.items()}


def _c_error_correlation(rows) -> dict:
    """Per seed: Pearson correlation between the scale c and |filled NDCG - true NDCG| of the
    training rollouts, over all of them and within prompt groups (both sides centred per group)."""
    pooled, within = [], []
    for r in rows:
        a = np.concatenate(r) if r else np.zeros((0, 3))
        pooled.append(stats.pearson(a[:, 0], a[:, 1]))
        if len(a):
            _, g = np.unique(a[:, 2], return_inverse=True)
            cnt = np.bincount(g)
            dc = a[:, 0] - (np.bincount(g, a[:, 0]) / cnt)[g]
            de = a[:, 1] - (np.bincount(g, a[:, 1]) / cnt)[g]
            within.append(stats.pearson(dc, de))
        else:
            within.append(float("nan"))
    return {"pooled_per_seed": pooled, "within_group_per_seed": within}


# -- main ---------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="seconds-long run for CI (tiny sizes, 2 seeds)")
    p.add_argument("--settings", default=",".join(SETTINGS), help=f"comma list of {list(SETTINGS)}")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--rollouts", type=int, default=128, help="rollouts per step per seed (prompts = rollouts / group)")
    p.add_argument("--train-prompts", type=int, default=2000)
    p.add_argument("--test-prompts", type=int, default=256)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--ppo-epochs", type=int, default=1)
    p.add_argument("--critic-epochs", type=int, default=40)
    p.add_argument("--critic-members", type=int, default=5)
    p.add_argument("--corr-every", type=int, default=5, help="record (c, |error|) every N steps (sparse)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", type=Path, default=RESULTS / "learning_dynamics.json")
    p.add_argument("--report", type=Path, default=None, help="print the markdown tables of an existing results JSON and exit")
    args = p.parse_args(argv)
    args.world = WorldConfig()
    if args.smoke:
        args.seeds, args.steps, args.eval_every, args.rollouts = 2, 4, 2, 16
        args.train_prompts, args.test_prompts, args.d_model = 64, 16, 16
        args.critic_epochs, args.critic_members, args.corr_every = 2, 2, 1
        args.world = WorldConfig(n_users=60, n_items=120, id_base=16, density=0.2)
    names = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [s for s in names if s not in SETTINGS]
    if unknown:
        p.error(f"--settings: unknown {unknown}; choose from {list(SETTINGS)}")
    if args.smoke:
        # the smoke run keeps every setting but shrinks the sweeps' K
        args.setting_list = [replace(SETTINGS[n], K=min(SETTINGS[n].K, 8 if n != "dense_K30" else 10)) for n in names]
    else:
        args.setting_list = [SETTINGS[n] for n in names]
    if args.eval_every < 1 or args.steps < 2 * args.eval_every:
        p.error("--steps must cover at least two evaluations (--eval-every)")
    for s in args.setting_list:
        if args.rollouts % s.group:
            p.error(f"--rollouts {args.rollouts} is not a multiple of setting {s.name}'s group {s.group}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report is not None:
        print(markdown_report(json.loads(args.report.read_text())))
        return 0
    torch.set_num_threads(args.threads)
    seeds = list(range(args.seeds))
    t0 = time.perf_counter()
    results = {"settings": {}}
    total = sum(len(s.arms) for s in args.setting_list) * args.steps
    with tqdm(total=total, desc="learning dynamics", unit="step", dynamic_ncols=True) as bar:
        for setting in args.setting_list:
            data = build_data(setting, args, seeds, tqdm.write)
            runs = {}
            for arm in setting.arms:
                bar.set_postfix_str(f"{setting.name}/{arm.name}")
                runs[arm.name] = train_arm(arm, setting, data, seeds, args, bar)
            results["settings"][setting.name] = summarise(setting, runs, seeds)
            if data.filler_quality:
                results["settings"][setting.name]["filler_quality"] = data.filler_quality
            print_table(setting.name, results["settings"][setting.name])
    results["wall_s"] = time.perf_counter() - t0
    args_out = {k: v for k, v in vars(args).items() if k not in ("out", "setting_list", "world")}
    results["args"] = args_out | {"world": asdict(args.world)}
    results["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": args.threads, "torch": torch.__version__}
    try:
        results["machine"]["loadavg_end"] = list(os.getloadavg())
    except OSError:
        pass
    print(f"\nwall time {results['wall_s']:.1f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dump_json(results))
    png = args.out.with_suffix(".png")
    plot(results, png)
    print(f"wrote {_rel(args.out)} and {_rel(png)}")
    return 0


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return path.name


if __name__ == "__main__":
    raise SystemExit(main())
