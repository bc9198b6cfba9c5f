"""Every recipe YAML and run script composes against the installed verl and passes verl's checks.

* every key a recipe YAML sets exists in verl's own ``ppo_trainer`` config (or is a FlexRec option,
  checked by ``FlexRecConfig``), so a typo'd key fails here instead of silently adding a new key;
* each primary config composes with hydra (searchpath ``pkg://verl.trainer.config``) and passes
  verl's ``validate_config`` plus verl's config dataclasses (actor, rollout, algorithm,
  distillation), and every name it selects is registered (reward manager, estimator, trainer);
* each ``run_*.sh`` prints its commands under ``DRY_RUN=1``; the verl command's overrides are
  composed in hydra's struct mode (an unknown key fails), the data-prep and critic commands are
  parsed by those tools' own argument parsers;
* one real ``python -m verl.trainer.main_ppo ... --cfg job`` (the exact CLI path users run).
"""

from __future__ import annotations

import importlib
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.trainer.ppo.v1.trainer_base import get_trainer_cls
from verl.utils.config import omega_conf_to_dataclass, validate_config

import verl_flexrec.register  # noqa: F401
from verl_flexrec.config import FlexRecConfig
from verl_flexrec.recipes import config_dir

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "flexrec"
CONFIG_DIR = config_dir()  # the recipes ship inside the package
YAMLS = sorted(p.relative_to(CONFIG_DIR).as_posix() for p in CONFIG_DIR.rglob("*.yaml"))
PRIMARY = [p for p in YAMLS if "ppo_trainer" in (yaml.safe_load((CONFIG_DIR / p).read_text()) or {}).get("defaults", [])]
BASELINES = sorted(p.stem for p in (CONFIG_DIR / "baseline").glob("*.yaml"))
# keys a recipe may set that verl's config does not declare: FlexRec's own block (validated by FlexRecConfig)
FLEXREC_BLOCK = ("algorithm", "flexrec")
# mappings verl forwards as **kwargs (ray.init(**ray_kwargs.ray_init)): any key is legitimate there
FREE_FORM = (("ray_kwargs", "ray_init"),)
DUMMY = {"data.train_files": "/data/train.parquet", "data.val_files": "/data/test.parquet", "actor_rollout_ref.model.path": "/models/m"}


def _compose(name: str, overrides=()):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name=name, overrides=list(overrides))


@pytest.fixture(scope="module")
def verl_base():
    import verl.trainer.config as verl_config

    with initialize_config_dir(config_dir=os.path.dirname(verl_config.__file__), version_base=None):
        return OmegaConf.to_container(compose(config_name="ppo_trainer"), resolve=False)


def _leaves(node, prefix=()):
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _leaves(value, prefix + (str(key),))
    else:
        yield prefix


def unknown_keys(recipe: dict, base: dict) -> list[str]:
    """Dotted keys ``recipe`` sets that ``base`` (verl's config) does not have.

    A key under a free-form mapping of verl's (an empty dict, e.g. ``override_config``) is allowed.
    """
    bad = []
    for path in _leaves({k: v for k, v in recipe.items() if k not in ("hydra", "defaults")}):
        if path[: len(FLEXREC_BLOCK)] == FLEXREC_BLOCK or any(path[: len(f)] == f for f in FREE_FORM):
            continue
        node = base
        for i, part in enumerate(path):
            if isinstance(node, dict) and part in node:
                node = node[part]
                continue
            if not (isinstance(node, dict) and not node and i > 0):
                bad.append(".".join(path))
            break
    return bad


@pytest.mark.parametrize("name", YAMLS)
def test_every_key_a_recipe_sets_exists_in_verls_config(name, verl_base):
    recipe = yaml.safe_load((CONFIG_DIR / name).read_text()) or {}
    assert unknown_keys(recipe, verl_base) == []
    flexrec = OmegaConf.select(OmegaConf.create(recipe), "algorithm.flexrec")
    if flexrec is not None:
        FlexRecConfig.from_any(flexrec)  # unknown FlexRec keys or values raise


def test_the_key_check_catches_typos(verl_base):
    recipe = {"actor_rollout_ref": {"actor": {"kl_los_coef": 0.01}, "model": {"override_config": {"any": 1}}}, "trainer": {"v1": {"trainer_mod": "x"}}}
    assert unknown_keys(recipe, verl_base) == ["actor_rollout_ref.actor.kl_los_coef", "trainer.v1.trainer_mod"]
    with pytest.raises(ValueError, match="advantage"):
        FlexRecConfig.from_any({"advantage": {"item_nrom": "position"}})


def _verl_checks(cfg):
    """verl's own validation of a composed config, and every name it selects is registered."""
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout)
    omega_conf_to_dataclass(cfg.distillation)
    algorithm = OmegaConf.to_container(cfg.algorithm, resolve=True)
    flexrec = algorithm.pop("flexrec", None)
    omega_conf_to_dataclass(OmegaConf.create(algorithm))  # verl's AlgoConfig
    FlexRecConfig.from_any(flexrec)
    assert get_reward_manager_cls(cfg.reward.reward_manager.name)
    assert core_algos.get_adv_estimator_fn(cfg.algorithm.adv_estimator)
    if cfg.trainer.use_v1:
        assert get_trainer_cls(cfg.trainer.v1.trainer_mode)


@pytest.mark.parametrize("name", PRIMARY)
def test_primary_recipes_compose_and_pass_verl_validation(name):
    cfg = _compose(Path(name).stem, [f"{k}={v}" for k, v in DUMMY.items()])
    _verl_checks(cfg)


@pytest.mark.parametrize("baseline", BASELINES)
def test_flexrec_trainer_with_each_baseline(baseline):
    cfg = _compose("flexrec_trainer", [f"{k}={v}" for k, v in DUMMY.items()] + [f"baseline={baseline}"])
    _verl_checks(cfg)
    flexrec = FlexRecConfig.from_any(cfg.algorithm.flexrec)
    expected = {
        "none": ("flexrec", True, "causal"),
        "rec_r1": ("rec_r1", False, "causal"),
        "rank_grpo": ("flexrec", False, "rank"),
        "no_uncertainty": ("flexrec", False, "causal"),
    }[baseline]
    assert (flexrec.advantage.mode, flexrec.uncertainty.enable, flexrec.reward.swap_mode) == expected


def test_flexrec_base_is_the_seam_and_the_package_defaults():
    cfg = _compose("flexrec_trainer", [f"{k}={v}" for k, v in DUMMY.items()])
    assert FlexRecConfig.from_any(cfg.algorithm.flexrec) == FlexRecConfig()
    assert (cfg.trainer.use_v1, cfg.trainer.v1.trainer_mode) == (True, "flexrec_sync")
    assert (cfg.reward.reward_manager.name, cfg.algorithm.adv_estimator) == ("flexrec", "flexrec")
    # the paper's settings
    actor = cfg.actor_rollout_ref.actor
    assert (actor.use_kl_loss, actor.kl_loss_coef, actor.entropy_coeff) == (True, 0.01, 0.005)
    assert cfg.actor_rollout_ref.rollout.n >= 8 and cfg.actor_rollout_ref.rollout.name == "vllm"
    assert actor.strategy == "fsdp" and cfg.actor_rollout_ref.model.path == DUMMY["actor_rollout_ref.model.path"]
    assert _compose("flexrec_trainer").actor_rollout_ref.model.path == "Qwen/Qwen2.5-3B-Instruct"


SCRIPTS = {
    "run_single_need.sh": ["kuairec", "ml-1m", "esci"],
    "run_unseen_needs.sh": ["kuairec", "ml-1m"],
    "run_multi_need.sh": ["kuairec", "ml-1m"],
    "run_sparse_critic.sh": ["kuairec", "ml-1m"],
}
CASES = [(s, d, "none") for s, ds in SCRIPTS.items() for d in ds] + [("run_sparse_critic.sh", "kuairec", b) for b in BASELINES if b != "none"]


def _dry_run(script, *args, **env):
    full = {**os.environ, "DRY_RUN": "1", "DATA_DIR": "/data", "CKPT_DIR": "/ckpt", **env}
    out = subprocess.run(["bash", str(RECIPE / script), *args], capture_output=True, text=True, env=full, timeout=60)
    assert out.returncode == 0, out.stderr
    return [shlex.split(line) for line in out.stdout.splitlines() if line.strip()]


def _check_command(argv):
    """Validate one printed command with the tool's own parser; return the verl config if any."""
    assert argv[0] == "python"
    if argv[1:3] == ["-m", "verl.trainer.main_ppo"]:
        i = argv.index("--config-name")
        assert Path(argv[argv.index("--config-path") + 1]) == CONFIG_DIR
        return _compose(argv[i + 1], argv[i + 2 :])  # struct mode: an unknown key raises
    if argv[1:3] == ["-m", "verl_flexrec.critic"]:
        from verl_flexrec.critic.__main__ import build_parser

        build_parser().parse_args(argv[3:])
        return None
    assert argv[1:3] == ["-m", "verl_flexrec.data"], argv
    importlib.import_module(f"verl_flexrec.data.{argv[3]}").build_parser().parse_args(argv[4:])
    return None


@pytest.mark.parametrize("script,dataset,baseline", CASES, ids=[f"{s}-{d}-{b}" for s, d, b in CASES])
def test_run_scripts_compose_with_verl(script, dataset, baseline):
    commands = _dry_run(script, dataset, "trainer.total_epochs=2", BASELINE=baseline)
    configs = [cfg for cfg in map(_check_command, commands) if cfg is not None]
    assert len(configs) == 1
    cfg = configs[0]
    _verl_checks(cfg)
    assert cfg.trainer.total_epochs == 2 and cfg.trainer.n_gpus_per_node == 4
    assert cfg.data.train_files.startswith(f"/data/{dataset}/") and cfg.trainer.default_local_dir.startswith("/ckpt/")
    if baseline != "none":
        assert cfg.trainer.experiment_name.endswith(baseline)
    if script == "run_sparse_critic.sh":
        assert cfg.data.train_files.endswith("train_filled.parquet")
        assert [c[3] for c in commands if c[1:3] == ["-m", "verl_flexrec.critic"]] == ["train", "evaluate", "fill"]


def test_run_baselines_runs_each_baseline_and_scripts_refuse_bad_input():
    commands = _dry_run("run_baselines.sh", "run_single_need.sh", "ml-1m")
    verl = [c for c in commands if "verl.trainer.main_ppo" in c]
    assert [next(a for a in c if a.startswith("baseline=")) for c in verl] == ["baseline=rec_r1", "baseline=rank_grpo", "baseline=no_uncertainty"]
    full = {**os.environ, "DRY_RUN": "1"}
    bad = subprocess.run(["bash", str(RECIPE / "run_multi_need.sh"), "esci"], capture_output=True, text=True, env=full, timeout=60)
    assert bad.returncode == 2 and "single need" in bad.stderr
    typo = _dry_run("run_single_need.sh", "kuairec", "actor_rollout_ref.actor.kl_los_coef=0.1")
    with pytest.raises(Exception, match="kl_los_coef"):
        [_check_command(c) for c in typo]


@pytest.mark.slow  # verl's main_ppo in a subprocess (~8 s of CPU)
def test_verl_main_ppo_cli_composes_the_recipe():
    """The exact command users run, up to hydra's --cfg job (prints the composed job config)."""
    (command,) = [c for c in _dry_run("run_single_need.sh", "kuairec", PYTHON=sys.executable) if "verl.trainer.main_ppo" in c]
    out = subprocess.run([*command, "--cfg", "job"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    cfg = OmegaConf.create(out.stdout[out.stdout.index("actor_rollout_ref:") :])
    assert cfg.trainer.v1.trainer_mode == "flexrec_sync" and cfg.algorithm.adv_estimator == "flexrec"
    assert cfg.data.train_files == "/data/kuairec/maximize_interest/train.parquet"
