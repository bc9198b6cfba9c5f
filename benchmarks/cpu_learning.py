"""Learning through verl's real trainer on a CPU: FlexRec causal credit vs sequence-only GRPO.

    python benchmarks/cpu_learning.py            # 2 arms x 3 seeds x 60 steps, one shared warm start
    python benchmarks/cpu_learning.py --smoke    # CI: 1 seed per arm, 4 steps, a few minutes

Every run is ``python -m verl_flexrec.cpu.tiny_job`` (what ``recipes/flexrec/run_tiny_cpu.sh``
runs: ``python -m verl.trainer.main_ppo`` with Ray, TransferQueue, the V1 trainer, FSDP2 over gloo, the ``hf_cpu`` rollout, FlexRec's reward manager,
estimator and trainer seam) on the genre task of :mod:`verl_flexrec.cpu.learnable_task`: 10
candidates, the need names a first- and a second-choice genre, ratings 5 / 3 / 1, NDCG with
exponential gains (``2**r - 1``, ``algorithm.flexrec.reward.gain=exponential``). Arms differ in
one override:

    flexrec   algorithm.adv_estimator=flexrec, advantage.mode=flexrec (causal swap item rewards)
    grpo      the same estimator with advantage.mode=rec_r1: every token gets the sequence GRPO
              advantage (Rec-R1), i.e. verl's GRPO on the same reward

Both arms of a seed start from the same warm-started model (one SFT for all runs: a tiny Qwen2
that writes valid rankings with a near-uniform choice of ids, so groups explore) and see the same
prompts in the same order (``data.seed``); seeds change the data order and the rollout sampling.
Validation (50 held-out rows, 2 answers sampled at temperature 1 per row, as the training rollouts
are sampled) runs every ``--test-freq`` steps; its NDCG@5 and ValidRatio
are read back from verl's own file logger (``trainer.logger=[console,file]``). The random floor
(exact expectation, :func:`verl_flexrec.evaluate.metrics.expected_random_metrics`) and the oracle
ceiling are computed on the same validation rows with the same gain.

Statistics: per arm and validation step, the mean over seeds with a 95 % Student-t interval;
"faster" compares the area under each seed's validation curve (its mean NDCG@5 over the
validation steps after step 0) between arms, paired by seed, with a t interval of the
differences. The runs are sequential Ray jobs: on a machine shared with other Ray jobs, run the
whole benchmark under one lock (``flock /tmp/ray.lock python benchmarks/cpu_learning.py``) so
they are not interleaved. Finished runs are kept in ``--work-dir`` and reused by a re-run
(``--collect`` summarises them without training). Writes ``benchmarks/results/cpu_learning.json`` and
``cpu_learning.png`` (no absolute paths).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from verl_flexrec.atomic import write_text_atomic
from verl_flexrec.cpu.learnable_task import DATA_SOURCE
from verl_flexrec.cpu.measure import run_measured
from verl_flexrec.evaluate.metrics import expected_random_metrics, ranking_metrics
from verl_flexrec.schema import GroundTruth

RESULTS = REPO / "benchmarks" / "results"
ARMS = {
    "flexrec": ["algorithm.adv_estimator=flexrec", "algorithm.flexrec.advantage.mode=flexrec"],
    "grpo": ["algorithm.adv_estimator=flexrec", "algorithm.flexrec.advantage.mode=rec_r1"],
    # FlexRec with A^seq added to the item tokens too (the validity signal reaches the ids)
    "flexrec_seq": ["algorithm.adv_estimator=flexrec", "algorithm.flexrec.advantage.mode=flexrec",
                    "algorithm.flexrec.advantage.add_seq_adv_to_items=true"],
}
DEFAULT_ARMS = ("flexrec", "grpo")
GAIN = "exponential"


def val_keys(n: int) -> tuple[str, str]:
    """verl's validation metric names for NDCG@5 and ValidRatio, averaged over ``n`` samples per row."""
    return f"val-aux/{DATA_SOURCE}/ndcg@5/mean@{n}", f"val-aux/{DATA_SOURCE}/flexrec_valid/mean@{n}"

TRAIN_KEYS = {"ndcg": "flexrec/ndcg/mean", "valid_ratio": "flexrec/valid_ratio", "step_s": "timing_s/step"}

FULL = {"seeds": 3, "steps": 60, "test_freq": 10, "batch": 8, "rollouts": 4, "lr": 3e-4, "train_rows": 640,
        "val_rows": 50, "val_n": 2, "sft_steps": 1500, "sft_lr": 1e-3, "sft_batch": 16, "sft_orders": 16, "sft_lean": 0.25,
        "hidden": 128, "layers": 2}
SMOKE = {"seeds": 1, "steps": 4, "test_freq": 2, "batch": 4, "rollouts": 4, "lr": 5e-4, "train_rows": 64,
         "val_rows": 10, "val_n": 2, "sft_steps": 20, "sft_lr": 1e-3, "sft_batch": 8, "sft_orders": 2, "sft_lean": 0.25,
         "hidden": 64, "layers": 2}


def t_interval(x: np.ndarray, level: float = 0.95) -> np.ndarray:
    """Half-width of the two-sided Student-t interval of the mean over axis 0 (0 for one seed)."""
    from scipy import stats

    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] < 2:
        return np.zeros(x.shape[1:])
    return stats.t.ppf(0.5 + level / 2, x.shape[0] - 1) * x.std(0, ddof=1) / np.sqrt(x.shape[0])


# ---------------------------------------------------------------------------------------------
# setup: task data + one warm-started model for every run
# ---------------------------------------------------------------------------------------------
SETUP_KEYS = ("train_rows", "val_rows", "sft_steps", "sft_lr", "sft_batch", "sft_orders", "sft_lean", "hidden", "layers")


def setup(work: Path, cfg: dict) -> dict:
    """``work/shared/{data,model}`` via ``python -m verl_flexrec.cpu.tiny_setup --dataset genre_task``;
    reused when ``work/shared/setup.json`` records the same settings (a re-run skips the warm start)."""
    shared = work / "shared"
    settings = {k: cfg[k] for k in SETUP_KEYS}
    record = shared / "setup.json"
    if record.is_file():
        done = json.loads(record.read_text())
        if done.get("settings") == settings:
            return {**done["info"], "reused": True}
    cmd = [sys.executable, "-m", "verl_flexrec.cpu.tiny_setup", "--workdir", str(shared), "--dataset", "genre_task",
           "--task-rows", str(cfg["train_rows"]), str(cfg["val_rows"]), "--sft-steps", str(cfg["sft_steps"]),
           "--sft-lr", str(cfg["sft_lr"]), "--sft-batch-size", str(cfg["sft_batch"]), "--sft-orders", str(cfg["sft_orders"]),
           "--sft-lean", str(cfg["sft_lean"]), "--model-hidden", str(cfg["hidden"]), "--model-layers", str(cfg["layers"])]
    started = time.perf_counter()
    shared.mkdir(parents=True, exist_ok=True)
    log = shared / "setup.log"
    # one torch thread: the SFT's small matmuls gain nothing from two, and spin-wait on a busy machine
    with open(log, "w") as f:
        code = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env={**_env(), "OMP_NUM_THREADS": "1"}, check=False).returncode
    text = log.read_text(errors="replace")
    if code != 0:
        raise SystemExit(f"setup failed: {' '.join(cmd)}\n{text[-4000:]}")
    info = {"seconds": round(time.perf_counter() - started, 1),
            "command": "python -m verl_flexrec.cpu.tiny_setup " + " ".join(cmd[3:]).replace(str(shared), "WORK/shared")}
    info.update(_warm_start_facts(shared, text))
    record.write_text(json.dumps({"settings": settings, "info": info}, indent=1) + "\n")
    return info


def _warm_start_facts(shared: Path, stdout: str) -> dict:
    """SFT loss line, and the warm-started policy's first-id entropy and sampled validity."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verl_flexrec.config import RewardOptions
    from verl_flexrec.cpu.warm_start import first_item_entropy
    from verl_flexrec.reward import score_response

    rows = _val_rows(shared)
    tok = AutoTokenizer.from_pretrained(shared / "model")
    model = AutoModelForCausalLM.from_pretrained(shared / "model").eval()
    entropy = first_item_entropy(model, tok, [r["prompt"] for r in rows])
    valid = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        for r in rows:
            ids = tok.apply_chat_template(list(r["prompt"]), add_generation_prompt=True, tokenize=True,
                                          return_dict=False)
            x = torch.tensor([ids])
            out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=48, do_sample=True,
                                 temperature=1.0, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            text = tok.decode(out[0, len(ids):], skip_special_tokens=True)
            valid.append(score_response(text, GroundTruth.from_any(r["reward_model"]["ground_truth"]),
                                        RewardOptions(gain=GAIN)).valid)
    sft = [line for line in stdout.splitlines() if line.startswith("warm-start SFT: loss")]
    return {"sft": sft[-1] if sft else "", "first_id_entropy_nats": round(entropy, 3),
            "uniform_entropy_nats": round(float(np.log(10)), 3),
            "sampled_valid_ratio": round(float(np.mean(valid)), 3)}


def _val_rows(shared: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(shared / "data" / "test.parquet").to_pylist()


def training_floor(gain: str = GAIN) -> float:
    """Expected full-list NDCG of a random valid ranking of the task's rows (the training rollouts'
    metric); every row of the genre task has the same gains (two 5s, two 3s, six 1s), so one row
    gives it exactly."""
    from verl_flexrec.cpu.learnable_task import build_rows

    g = GroundTruth.from_any(build_rows(1, "test", seed=0)[0]["reward_model"]["ground_truth"]).gains_array()
    return float(expected_random_metrics(g, gain)[f"ndcg@{len(g)}"])


def references(shared: Path) -> dict:
    """Random floor (exact expectation) and oracle ceiling of NDCG@5 on the validation rows."""
    gains = [GroundTruth.from_any(r["reward_model"]["ground_truth"]).gains_array() for r in _val_rows(shared)]
    out = {}
    for gain in ("exponential", "linear"):
        out[gain] = {
            "random_floor": float(np.mean([expected_random_metrics(g, gain)["ndcg@5"] for g in gains])),
            "oracle_ceiling": float(np.mean([ranking_metrics(np.argsort(-g, kind="stable"), g, gain)["ndcg@5"]
                                             for g in gains])),
        }
    out["rows"] = len(gains)
    return out


# ---------------------------------------------------------------------------------------------
# one trainer run
# ---------------------------------------------------------------------------------------------
def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def overrides(arm: str, seed: int, cfg: dict, run: Path) -> list[str]:
    return [
        *ARMS[arm],
        f"algorithm.flexrec.reward.gain={GAIN}",
        f"data.train_batch_size={cfg['batch']}", f"actor_rollout_ref.actor.ppo_mini_batch_size={cfg['batch']}",
        f"actor_rollout_ref.rollout.n={cfg['rollouts']}", f"actor_rollout_ref.actor.optim.lr={cfg['lr']}",
        "data.max_prompt_length=320", f"data.seed={seed}", f"actor_rollout_ref.rollout.seed={seed}",
        f"trainer.total_training_steps={cfg['steps']}", f"trainer.test_freq={cfg['test_freq']}",
        # validation samples as the training rollouts do (temperature 1, val_n answers per row): the
        # policy's expected NDCG, which RL optimises; greedy decoding turns a small lean into a jump
        "actor_rollout_ref.rollout.val_kwargs.do_sample=true", "actor_rollout_ref.rollout.val_kwargs.temperature=1.0",
        f"actor_rollout_ref.rollout.val_kwargs.n={cfg['val_n']}",
        "trainer.save_freq=-1", "trainer.val_before_train=true", "trainer.logger=[console,file]",
        "trainer.v1.trainer_mode=flexrec_sync", "trainer.rollout_data_dir=null",
        f"trainer.experiment_name={arm}_seed{seed}", f"trainer.default_local_dir={run / 'checkpoints'}",
    ]


def _run_settings(arm: str, seed: int, cfg: dict) -> dict:
    """What decides one run's outcome (not the number of seeds: a 1-seed pilot's runs are reused)."""
    return {"arm": arm, "seed": seed, **{k: cfg[k] for k in sorted(cfg) if k != "seeds"}}


def train(work: Path, arm: str, seed: int, cfg: dict) -> dict:
    """One ``python -m verl_flexrec.cpu.tiny_job`` launch ; returns its curves.

    A finished run of the same settings (``RUN/done.json``) is reused, so an interrupted benchmark
    resumes where it stopped."""
    run = work / f"{arm}_seed{seed}"
    done = run / "done.json"
    if done.is_file():
        record = json.loads(done.read_text())
        if record.get("settings") == _run_settings(arm, seed, cfg):
            return record["curves"]
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    for name in ("data", "model"):
        (run / name).symlink_to(work / "shared" / name, target_is_directory=True)
    env = {**_env(), "TINY_CPU_SKIP_SETUP": "1", "VERL_FILE_LOGGER_PATH": str(run / "metrics.jsonl")}
    cmd = [sys.executable, "-m", "verl_flexrec.cpu.tiny_job", str(run), *overrides(arm, seed, cfg, run)]
    with open(run / "train.log", "w") as log:
        report = run_measured(cmd, timeout=3600, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    if report["returncode"] != 0:
        tail = (run / "train.log").read_text(errors="replace")[-5000:]
        raise SystemExit(f"{arm} seed {seed}: trainer exited {report['returncode']} (log {run / 'train.log'}):\n{tail}")
    curves = {"seed": seed, **read_curves(run / "metrics.jsonl", cfg["val_n"]), "wall_s": report["wall_s"],
              "peak_process_rss_mib": report["peak_process_rss_mib"]}
    done.write_text(json.dumps({"settings": _run_settings(arm, seed, cfg), "curves": curves}) + "\n")
    return curves


def collect(work: Path, cfg: dict, arms: tuple[str, ...] = DEFAULT_ARMS) -> dict[str, list[dict]]:
    """The finished runs in ``work`` (every validation step up to ``cfg['steps']`` in verl's log),
    for the seeds both arms finished; nothing is trained."""
    runs: dict[str, list[dict]] = {arm: [] for arm in arms}
    for seed in range(cfg["seeds"]):
        found = {}
        for arm in arms:
            path = work / f"{arm}_seed{seed}" / "metrics.jsonl"
            if path.is_file():
                curves = read_curves(path, cfg["val_n"])
                if curves["val"]["step"] and curves["val"]["step"][-1] == cfg["steps"]:
                    found[arm] = {"seed": seed, **curves, "wall_s": None, "peak_process_rss_mib": None}
        if len(found) == len(arms):
            for arm in arms:
                runs[arm].append(found[arm])
    if not runs[arms[0]]:
        raise SystemExit(f"{work}: no seed with finished runs of every arm")
    return runs


def read_curves(path: Path, val_n: int) -> dict:
    """Validation and training curves from verl's file logger (one JSON line per logged step)."""
    val_ndcg, val_valid = val_keys(val_n)
    val = {"step": [], "ndcg@5": [], "valid_ratio": []}
    tr = {"step": [], **{k: [] for k in TRAIN_KEYS}}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        step, data = int(record["step"]), record["data"]
        if val_ndcg in data:
            val["step"].append(step)
            val["ndcg@5"].append(float(data[val_ndcg]))
            val["valid_ratio"].append(float(data[val_valid]))
        if TRAIN_KEYS["ndcg"] in data:
            tr["step"].append(step)
            for key, name in TRAIN_KEYS.items():
                tr[key].append(float(data.get(name, float("nan"))))
    if not val["step"]:
        raise SystemExit(f"{path}: no validation metric {val_ndcg!r} in verl's log")
    return {"val": val, "train": tr}


# ---------------------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------------------
def _mean_ci(x: np.ndarray) -> dict:
    """Mean and 95 % t half-width over seeds of a per-seed value (None where a seed has no value)."""
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        return {"mean": None, "ci95": None}
    return {"mean": float(np.mean(x)), "ci95": float(t_interval(x[:, None])[0])}


def training_summary(seeds: list[dict], window: int = 10) -> dict:
    """The sampled training rollouts in the first and last ``window`` steps: ValidRatio, and the
    NDCG of the valid ones (verl's ``flexrec/ndcg/mean`` counts invalid rollouts as 0, so it is
    divided by the step's ValidRatio): is the policy ranking better, or only failing less?"""
    valid = np.array([s["train"]["valid_ratio"] for s in seeds])
    ndcg = np.array([s["train"]["ndcg"] for s in seeds])
    per_valid = np.where(valid > 0, ndcg / np.where(valid > 0, valid, 1.0), np.nan)
    w = min(window, valid.shape[1])
    out = {"window_steps": w}
    for name, x in (("valid_ratio", valid), ("ndcg_of_valid", per_valid)):
        with warnings.catch_warnings():  # a window without one valid rollout: NaN, reported as None
            warnings.simplefilter("ignore", RuntimeWarning)
            first, last = np.nanmean(x[:, :w], 1), np.nanmean(x[:, -w:], 1)
        out[name] = {"first": _mean_ci(first), "last": _mean_ci(last), "change": _mean_ci(last - first)}
    return out


def summarise(runs: dict[str, list[dict]]) -> dict:
    out: dict = {"arms": {}}
    area = {}
    for arm, seeds in runs.items():
        steps = seeds[0]["val"]["step"]
        ndcg = np.array([s["val"]["ndcg@5"] for s in seeds])
        valid = np.array([s["val"]["valid_ratio"] for s in seeds])
        area[arm] = ndcg[:, 1:].mean(1) if ndcg.shape[1] > 1 else ndcg[:, 0]
        # invalid answers score 0, so NDCG / ValidRatio is the mean NDCG@5 of the valid answers
        of_valid = ndcg[:, -1] / np.maximum(valid[:, -1], 1e-12)
        out["arms"][arm] = {
            "step": steps,
            "ndcg@5": {"mean": ndcg.mean(0).tolist(), "ci95": t_interval(ndcg).tolist()},
            "valid_ratio": {"mean": valid.mean(0).tolist(), "ci95": t_interval(valid).tolist()},
            "start": {"mean": float(ndcg[:, 0].mean()), "ci95": float(t_interval(ndcg[:, :1])[0])},
            "end": {"mean": float(ndcg[:, -1].mean()), "ci95": float(t_interval(ndcg[:, -1:])[0])},
            "rise": {"mean": float((ndcg[:, -1] - ndcg[:, 0]).mean()),
                     "ci95": float(t_interval((ndcg[:, -1] - ndcg[:, 0])[:, None])[0])},
            "area": {"mean": float(area[arm].mean()), "ci95": float(t_interval(area[arm][:, None])[0])},
            "end_ndcg_of_valid": {"mean": float(of_valid.mean()), "ci95": float(t_interval(of_valid[:, None])[0])},
            "training_rollouts": training_summary(seeds),
        }
    for arm in (a for a in area if a != "grpo" and "grpo" in area):
        out[f"{arm}_minus_grpo"] = paired_difference(arm, runs[arm], runs["grpo"], area[arm] - area["grpo"])
    return out


def paired_difference(arm: str, seeds: list[dict], grpo: list[dict], area_diff: np.ndarray) -> dict:
    """``arm`` − GRPO paired by seed: the area under the validation curve ("learns faster") and the
    last validation, each with a t interval and a plain verdict."""
    end_diff = np.array([s["val"]["ndcg@5"][-1] for s in seeds]) - np.array([s["val"]["ndcg@5"][-1] for s in grpo])
    out = {}
    for key, diff, better in (("area", area_diff, "learns faster"), ("end", end_diff, "ends higher")):
        half, mean = float(t_interval(diff[:, None])[0]), float(diff.mean())
        separated = len(diff) > 1 and abs(mean) > half
        out[key] = {"mean": mean, "ci95": half, "per_seed": diff.tolist(),
                    "verdict": ((arm if mean > 0 else "grpo") + f" {better}" if separated else
                                "not separated at this number of seeds (the interval includes 0)")}
    out["verdict"] = f"mean over validations: {out['area']['verdict']}; last validation: {out['end']['verdict']}"
    return out


def markdown(results: dict) -> str:
    ref, s = results["references"], results["summary"]
    fl, ce = ref[GAIN]["random_floor"], ref[GAIN]["oracle_ceiling"]
    seeds = results.get("seeds_finished", results["settings"]["seeds"])
    n = results["settings"]["val_n"]
    title = (f"Validation NDCG@5 ({GAIN} gain 2^r - 1, {n} answers sampled at temperature 1 per row, invalid = 0, "
             f"{ref['rows']} held-out rows), mean ± 95 % t-interval over {seeds} seed(s)")
    lines = [title, "",
             (f"| arm | start (step 0) | end (step {results['settings']['steps']}) | rise | mean over validations "
              "| end ValidRatio | end NDCG@5 of valid answers |"),
             "|---|---|---|---|---|---|---|",
             f"| random floor (expected) | {fl:.3f} | {fl:.3f} | – | – | – | {fl:.3f} |",
             f"| oracle ceiling | {ce:.3f} | {ce:.3f} | – | – | 1.000 | {ce:.3f} |"]
    for arm, a in s["arms"].items():
        lines.append(f"| {arm} | {a['start']['mean']:.3f} ± {a['start']['ci95']:.3f} | {a['end']['mean']:.3f} ± "
                     f"{a['end']['ci95']:.3f} | {a['rise']['mean']:+.3f} ± {a['rise']['ci95']:.3f} | "
                     f"{a['area']['mean']:.3f} ± {a['area']['ci95']:.3f} | {a['valid_ratio']['mean'][-1]:.3f} ± "
                     f"{a['valid_ratio']['ci95'][-1]:.3f} | {a['end_ndcg_of_valid']['mean']:.3f} ± "
                     f"{a['end_ndcg_of_valid']['ci95']:.3f} |")
    w = next(iter(s["arms"].values()))["training_rollouts"]["window_steps"]
    lines += ["", (f"Training rollouts (sampled, temperature 1), first vs last {w} steps, mean ± 95 % t-interval; "
                   f"full-list NDCG ({GAIN} gain) of a random valid ranking: {training_floor():.3f}"),
              "", "| arm | ValidRatio first | last | change | NDCG of valid rollouts first | last | change |",
              "|---|---|---|---|---|---|---|"]
    for arm, a in s["arms"].items():
        t = a["training_rollouts"]
        cells = ["–" if t[k][p]["mean"] is None else
                 f"{t[k][p]['mean']:{'+' if p == 'change' else ''}.3f} ± {t[k][p]['ci95']:.3f}"
                 for k in ("valid_ratio", "ndcg_of_valid") for p in ("first", "last", "change")]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    for arm in s["arms"]:
        d = s.get(f"{arm}_minus_grpo")
        if d:
            lines += ["", (f"{arm} − grpo, paired by seed: mean over validations {d['area']['mean']:+.3f} ± "
                           f"{d['area']['ci95']:.3f} ({d['area']['verdict']}), last validation {d['end']['mean']:+.3f} ± "
                           f"{d['end']['ci95']:.3f} ({d['end']['verdict']}).")]
    return "\n".join(lines)


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Trailing moving average (the first points average what there is)."""
    c = np.cumsum(np.insert(np.asarray(x, dtype=np.float64), 0, 0.0))
    n = np.minimum(np.arange(1, len(x) + 1), width)
    return (c[1:] - c[np.arange(1, len(x) + 1) - n]) / n


def plot(results: dict, path: Path) -> None:
    """Validation NDCG@5 and ValidRatio (mean, 95 % band, each seed) and the training rollouts' NDCG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = results["references"][GAIN]
    floor_full = training_floor()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    colors = {"flexrec": "tab:blue", "grpo": "tab:orange", "flexrec_seq": "tab:green"}
    for arm, seeds in results["runs"].items():
        a = results["summary"]["arms"][arm]
        steps = np.array(a["step"])
        for ax, key in zip(axes, ("ndcg@5", "valid_ratio")):
            mean, ci = np.array(a[key]["mean"]), np.array(a[key]["ci95"])
            ax.plot(steps, mean, color=colors.get(arm), label=f"{arm} (mean of {len(seeds)})", linewidth=2)
            ax.fill_between(steps, mean - ci, mean + ci, color=colors.get(arm), alpha=0.2)
            for s in seeds:
                ax.plot(s["val"]["step"], s["val"][key], color=colors.get(arm), alpha=0.35, linewidth=0.8)
        # training rollouts (sampled at temperature 1): ValidRatio, and the NDCG of the valid ones
        valid = np.array([s["train"]["valid_ratio"] for s in seeds])
        ndcg = np.array([s["train"]["ndcg"] for s in seeds])
        width = max(1, valid.shape[1] // 10)
        steps = seeds[0]["train"]["step"]
        axes[2].plot(steps, _smooth(ndcg.sum(0) / np.maximum(valid.sum(0), 1e-9), width), color=colors.get(arm),
                     label=f"{arm}: NDCG of valid rollouts", linewidth=2)
        axes[2].plot(steps, _smooth(valid.mean(0), width), color=colors.get(arm), linestyle="--",
                     label=f"{arm}: ValidRatio", linewidth=1.5)
    for ax in axes[:1]:
        ax.axhline(ref["random_floor"], color="black", linestyle="--", linewidth=1, label="random floor (expected)")
        ax.axhline(ref["oracle_ceiling"], color="black", linestyle=":", linewidth=1, label="oracle ceiling")
    axes[2].axhline(floor_full, color="black", linestyle="--", linewidth=1,
                    label="random valid ranking (expected full-list NDCG)")
    axes[0].set_ylabel(f"validation NDCG@5 ({GAIN} gain, sampled, T=1)")
    axes[1].set_ylabel("validation ValidRatio (sampled, T=1)")
    axes[2].set_ylabel("training rollouts (sampled, T=1; moving average)")
    for ax in axes:
        ax.set_xlabel("training step (verl main_ppo)")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("FlexRec through verl's real trainer on a CPU: genre task, tiny Qwen2 (band: 95 % t-interval over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class LoadSampler:
    """The 1-minute load average every ``interval`` seconds while the benchmark runs (a shared machine)."""

    def __init__(self, interval: float = 30.0):
        import threading

        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while True:
            self.samples.append(round(os.getloadavg()[0], 2))
            if self._stop.wait(interval):
                return

    def summary(self) -> dict:
        self._stop.set()
        x = np.array(self.samples or [float("nan")])
        return {"samples": len(self.samples), "interval_s": 30.0, "min": float(x.min()),
                "mean": round(float(x.mean()), 2), "max": float(x.max())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="1 seed per arm, 4 steps, tiny warm start (CI)")
    p.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=list(DEFAULT_ARMS),
                   help=f"arms to run (default: {' '.join(DEFAULT_ARMS)}); finished runs in --work-dir are reused")
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--test-freq", type=int, default=None)
    p.add_argument("--sft-steps", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="actor learning rate of the RL runs")
    p.add_argument("--batch", type=int, default=None, help="prompts per step")
    p.add_argument("--work-dir", type=Path, default=None, help="run folders (default: a temporary folder, removed unless the results go there)")
    p.add_argument("--out", type=Path, default=None,
                   help="results JSON (default: benchmarks/results/cpu_learning.json; --smoke: WORK/cpu_learning.json)")
    p.add_argument("--collect", action="store_true",
                   help="train nothing: summarise the finished runs in --work-dir (seeds both arms finished)")
    p.add_argument("--report", type=Path, default=None, metavar="JSON",
                   help="print the tables of a results file, redraw its plot (next to it) and bring its summary up "
                        "to date with its curves; trains nothing")
    args = p.parse_args(argv)
    if args.report is not None:
        results = json.loads(args.report.read_text())
        summary = summarise(results["runs"])  # from the recorded curves
        if summary != results["summary"]:  # a file written before a summary statistic was added
            results["summary"] = summary
            write_text_atomic(args.report, json.dumps(results, indent=1) + "\n")
        plot(results, args.report.with_suffix(".png"))
        print(markdown(results))
        return 0
    cfg = dict(SMOKE if args.smoke else FULL)
    for key in ("seeds", "steps", "test_freq", "sft_steps", "lr", "batch"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="cpu_learning_"))
    work.mkdir(parents=True, exist_ok=True)
    out = args.out or (work / "cpu_learning.json" if args.smoke else RESULTS / "cpu_learning.json")
    started = time.perf_counter()
    load_before = _load()
    sampler = LoadSampler()
    print(f"[setup] task data + warm start ({cfg['sft_steps']} SFT steps) ...", flush=True)
    info = setup(work, cfg)
    print(f"[setup] {info['seconds']} s; {info['sft']}; first-id entropy {info['first_id_entropy_nats']} nats "
          f"(uniform {info['uniform_entropy_nats']}); sampled ValidRatio {info['sampled_valid_ratio']}", flush=True)
    arms = tuple(dict.fromkeys(args.arms))
    runs: dict[str, list[dict]] = {arm: [] for arm in arms}
    if args.collect:
        if args.work_dir is None:
            raise SystemExit("--collect needs --work-dir")
        runs = collect(work, cfg, arms)
    for seed in range(0 if args.collect else cfg["seeds"]):
        for arm in arms:
            t0 = time.perf_counter()
            curves = train(work, arm, seed, cfg)
            runs[arm].append(curves)
            v = curves["val"]
            print(f"[{arm} seed {seed}] {time.perf_counter() - t0:.0f} s; val NDCG@5 "
                  + " ".join(f"{s}:{x:.3f}" for s, x in zip(v["step"], v["ndcg@5"]))
                  + f"; ValidRatio {v['valid_ratio'][0]:.2f} -> {v['valid_ratio'][-1]:.2f}", flush=True)
    import torch
    import transformers
    import verl

    results = {
        "benchmark": "cpu_learning",
        "command": "python benchmarks/cpu_learning.py" + (" --smoke" if args.smoke else "")
                   + ("" if arms == DEFAULT_ARMS else " --arms " + " ".join(arms)),
        "seeds_finished": len(runs[arms[0]]),
        "settings": {**cfg, "gain": GAIN, "arms": {k: ARMS[k] for k in arms}, "task": "verl_flexrec.cpu.learnable_task",
                     "candidates": 10, "validation": f"sampled (val_kwargs do_sample, temperature 1, n {cfg['val_n']})"},
        "warm_start": info,
        "references": references(work / "shared"),
        "runs": runs,
        "summary": summarise(runs),
        "environment": {"machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, no GPU used",
                        "load_average_before": load_before, "load_average_after": _load(),
                        "load_average_1min_during": sampler.summary(),
                        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                                     "transformers": transformers.__version__, "verl": verl.__version__}},
        "total_wall_s": round(time.perf_counter() - started, 1),
    }
    if args.collect:  # this process only read the runs: its wall time and load say nothing about them
        results["total_wall_s"] = None
        results["environment"]["collected_from_finished_runs"] = True
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(results, indent=1) + "\n")
    plot(results, out.with_suffix(".png"))
    print(markdown(results))
    print(f"total {results['total_wall_s'] or 0:.0f} s; load average before {load_before}, after {_load()}; "
          f"wrote {out.name} and {out.with_suffix('.png').name}")
    if args.work_dir is None and work not in out.parents:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
