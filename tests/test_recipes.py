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
import json
import os
import re
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


MAIN = "run_qwen2_5_3b_vllm.sh"
SETTINGS = {
    "single_need": ["kuairec", "ml-1m", "esci"],
    "unseen_needs": ["kuairec", "ml-1m"],
    "multi_need": ["kuairec", "ml-1m"],
    "sparse_critic": ["kuairec", "ml-1m"],
}
CASES = [(s, d, "none") for s, ds in SETTINGS.items() for d in ds] + [("sparse_critic", "kuairec", b) for b in BASELINES if b != "none"]
SHELL_SCRIPTS = sorted(p.name for p in RECIPE.glob("*.sh"))


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
    from verl_flexrec.data.__main__ import COMMANDS

    importlib.import_module(f"verl_flexrec.data.{COMMANDS[argv[3]][0]}").build_parser().parse_args(argv[4:])
    return None


def _verl_config(commands):
    configs = [cfg for cfg in map(_check_command, commands) if cfg is not None]
    assert len(configs) == 1
    return configs[0]


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_every_script_parses(script):
    out = subprocess.run(["bash", "-n", str(RECIPE / script)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def test_required_verl_names_the_installed_verl():
    from importlib.metadata import version

    from packaging.requirements import Requirement

    lines = [l for l in (RECIPE / "REQUIRED_VERL.txt").read_text().splitlines() if l.strip() and not l.startswith("#")]
    req = Requirement(lines[0])
    assert req.name == "verl" and req.specifier.contains(version("verl"))


def test_the_environment_block_comes_first_and_is_upper_case():
    text = (RECIPE / MAIN).read_text().splitlines()
    body = [l for l in text if l.strip() and not l.startswith("#")]
    assert body[0] == "set -euo pipefail" and body[-2].startswith("source ") and body[-1] == 'flexrec_main "$@"'
    for line in body[1:-2]:
        name = line.split("=", 1)[0]
        assert name.isupper() and line.startswith(f"{name}=${{{name}:-"), line


@pytest.mark.parametrize("setting,dataset,baseline", CASES, ids=[f"{s}-{d}-{b}" for s, d, b in CASES])
def test_run_scripts_compose_with_verl(setting, dataset, baseline):
    commands = _dry_run(MAIN, setting, dataset, "trainer.total_epochs=2", BASELINE=baseline)
    cfg = _verl_config(commands)
    _verl_checks(cfg)
    assert cfg.trainer.total_epochs == 2 and cfg.trainer.n_gpus_per_node == 4
    assert cfg.data.train_files.startswith(f"/data/{dataset}/")
    # a fresh timestamped run, its checkpoints keyed by its name, resumed only by that name
    name = cfg.trainer.experiment_name
    assert re.fullmatch(r"flexrec_.+_\d{8}_\d{6}" + (f"_{baseline}" if baseline != "none" else ""), name) or \
        re.fullmatch(r"flexrec_.+" + (f"_{baseline}" if baseline != "none" else "") + r"_\d{8}_\d{6}", name), name
    assert cfg.trainer.default_local_dir == f"/ckpt/{name}" and cfg.trainer.resume_mode == "auto"
    assert cfg.trainer.max_actor_ckpt_to_keep == 2 and cfg.trainer.val_before_train is True
    # never drop a prompt for length: the length comes from the measurement, overlong rows stop verl
    assert (cfg.data.filter_overlong_prompts, cfg.data.truncation) == (False, "error")
    (measure,) = [c for c in commands if c[3:4] == ["prompt-lengths"]]
    assert measure[4] == str(Path(cfg.data.val_files).parent) and measure[measure.index("--tokenizer") + 1] == "qwen2"
    # token budgets from the lengths
    seq = cfg.data.max_prompt_length + cfg.data.max_response_length
    actor, ref, rollout = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.ref, cfg.actor_rollout_ref.rollout
    assert actor.use_dynamic_bsz and actor.ppo_max_token_len_per_gpu == 2 * seq
    assert ref.log_prob_use_dynamic_bsz and ref.log_prob_max_token_len_per_gpu == 4 * seq
    assert rollout.log_prob_use_dynamic_bsz and rollout.log_prob_max_token_len_per_gpu == 4 * seq
    # an installed attention implementation (no flash-attn here) without padding removal
    assert cfg.actor_rollout_ref.model.override_config.attn_implementation == "sdpa"
    assert cfg.actor_rollout_ref.model.use_remove_padding is False
    assert cfg.ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES == "verl_flexrec.register"
    if setting == "sparse_critic":
        assert cfg.data.train_files.endswith("train_filled.parquet")
        assert [c[3] for c in commands if c[1:3] == ["-m", "verl_flexrec.critic"]] == ["train", "evaluate", "fill"]


@pytest.mark.parametrize("old", ["run_single_need.sh", "run_unseen_needs.sh", "run_multi_need.sh", "run_sparse_critic.sh"])
def test_setting_scripts_are_the_main_script(old):
    setting = old[len("run_"):-len(".sh")]
    strip = lambda cmds: [[a for a in c if not re.search(r"\d{8}_\d{6}", a)] for c in cmds]  # noqa: E731
    assert strip(_dry_run(old, "ml-1m", RUN_NAME="x")) == strip(_dry_run(MAIN, setting, "ml-1m", RUN_NAME="x"))


def test_switches_are_environment_variables():
    cfg = _verl_config(_dry_run(MAIN, "single_need", "ml-1m", INFER_BACKEND="sglang", LOGGER="console,wandb",
                                RUN_NAME="my_run", MAX_PROMPT_LENGTH="2048", MAX_RESPONSE_LENGTH="512",
                                ATTN_IMPL="flash_attention_2"))
    _verl_checks(cfg)
    assert cfg.actor_rollout_ref.rollout.name == "sglang" and list(cfg.trainer.logger) == ["console", "wandb"]
    assert (cfg.trainer.experiment_name, cfg.trainer.default_local_dir) == ("my_run", "/ckpt/my_run")
    assert (cfg.data.max_prompt_length, cfg.actor_rollout_ref.actor.ppo_max_token_len_per_gpu) == (2048, 2 * 2560)
    assert cfg.actor_rollout_ref.model.override_config.attn_implementation == "flash_attention_2"
    assert cfg.actor_rollout_ref.model.use_remove_padding is True
    assert _verl_config(_dry_run("run_qwen2_5_3b_sglang.sh", "single_need", "ml-1m")).actor_rollout_ref.rollout.name == "sglang"


def test_lora_variant_fits_one_gpu(monkeypatch):
    import types

    # validate_config checks a vLLM LoRA rank by importing vLLM (absent on CPU CI): stand in with the
    # ranks verl's own fallback lists (verl/workers/rollout/vllm_rollout/utils.py, MaxLoRARanks)
    ranks = []
    stub = types.ModuleType("verl.workers.rollout.vllm_rollout.utils")
    stub.get_vllm_max_lora_rank = lambda rank: ranks.append(rank) or next(r for r in (1, 8, 16, 32, 64, 128, 256, 320, 512) if rank <= r)
    monkeypatch.setitem(sys.modules, stub.__name__, stub)
    cfg = _verl_config(_dry_run("run_qwen2_5_3b_lora_vllm.sh", "single_need", "kuairec"))
    _verl_checks(cfg)
    assert ranks == [64]
    model, rollout = cfg.actor_rollout_ref.model, cfg.actor_rollout_ref.rollout
    assert (cfg.trainer.n_gpus_per_node, model.lora_rank, model.target_modules) == (1, 64, "all-linear")
    assert rollout.load_format == "safetensors" and rollout.gpu_memory_utilization <= 0.4
    assert cfg.data.train_batch_size * rollout.n % cfg.trainer.n_gpus_per_node == 0
    full = _verl_config(_dry_run(MAIN, "single_need", "kuairec"))
    assert full.actor_rollout_ref.model.lora_rank == 0


def test_run_baselines_runs_each_baseline_and_scripts_refuse_bad_input():
    commands = _dry_run("run_baselines.sh", MAIN, "single_need", "ml-1m", RUN_NAME="b")
    verl = [c for c in commands if "verl.trainer.main_ppo" in c]
    assert [next(a for a in c if a.startswith("baseline=")) for c in verl] == ["baseline=rec_r1", "baseline=rank_grpo", "baseline=no_uncertainty"]
    assert [next(a for a in c if a.startswith("trainer.experiment_name=")) for c in verl] == [
        "trainer.experiment_name=b_rec_r1", "trainer.experiment_name=b_rank_grpo", "trainer.experiment_name=b_no_uncertainty"]
    full = {**os.environ, "DRY_RUN": "1"}
    for args, env, message in [
        (["multi_need", "esci"], {}, "single need"),
        (["single_need", "esci"], {"INFER_BACKEND": "hf_cpu"}, "run_tiny_cpu.sh"),
        (["single_need", "esci"], {"INFER_BACKEND": "trt"}, "vllm or sglang"),
        (["single_need", "esci"], {"LOGGER": "console,wandbb"}, "'wandbb' is not one of"),
        (["single_need", "esci"], {"ATTN_IMPL": "flash3"}, "ATTN_IMPL=flash3"),
        (["single_need", "esci"], {"RUN_NAME": "a/b"}, "plain folder name"),
        (["single_need", "esci"], {"MAX_PROMPT_LENGTH": "big"}, "MAX_PROMPT_LENGTH=big"),
        (["nope", "esci"], {}, "unknown setting"),
    ]:
        bad = subprocess.run(["bash", str(RECIPE / MAIN), *args], capture_output=True, text=True, env={**full, **env}, timeout=60)
        assert bad.returncode == 2 and message in bad.stderr, (args, env, bad.stderr)
        assert "verl.trainer.main_ppo" not in bad.stdout
    typo = _dry_run(MAIN, "single_need", "kuairec", "actor_rollout_ref.actor.kl_los_coef=0.1")
    with pytest.raises(Exception, match="kl_los_coef"):
        [_check_command(c) for c in typo]


def _guard(tmp_path, *args, **env):
    script = f'source "{RECIPE}/common.sh"; guard_resume "$1" "${{@:2}}"'
    full = {**os.environ, "DRY_RUN": "0", "RUN_NAME": "r", "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", "-c", script, "guard", str(tmp_path / "r"), *args], capture_output=True, text=True,
                          env=full, timeout=30)


def test_a_run_name_resumes_only_with_the_settings_it_started_with(tmp_path):
    assert _guard(tmp_path, "data.train_files=a", "trainer.total_epochs=5").returncode == 0
    (tmp_path / "r" / "latest_checkpointed_iteration.txt").write_text("7")
    same = _guard(tmp_path, "data.train_files=a", "trainer.total_epochs=5")
    assert same.returncode == 0 and "resuming run r from step 7" in same.stderr
    other = _guard(tmp_path, "data.train_files=b", "trainer.total_epochs=5")
    assert other.returncode == 2 and "RUN_NAME=r was started with other settings" in other.stderr
    assert "< data.train_files=a" in other.stderr and "> data.train_files=b" in other.stderr
    assert _guard(tmp_path, "data.train_files=b", "trainer.total_epochs=5", RESUME_CHANGED="1").returncode == 0


@pytest.mark.slow  # verl's main_ppo in a subprocess (~8 s of CPU)
def test_verl_main_ppo_cli_composes_the_recipe():
    """The exact command users run, up to hydra's --cfg job (prints the composed job config)."""
    (command,) = [c for c in _dry_run(MAIN, "single_need", "kuairec", PYTHON=sys.executable, RUN_NAME="cli")
                  if "verl.trainer.main_ppo" in c]
    out = subprocess.run([*command, "--cfg", "job"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    cfg = OmegaConf.create(out.stdout[out.stdout.index("actor_rollout_ref:") :])
    assert cfg.trainer.v1.trainer_mode == "flexrec_sync" and cfg.algorithm.adv_estimator == "flexrec"
    assert cfg.data.train_files == "/data/kuairec/maximize_interest/train.parquet"


@pytest.mark.parametrize("name", PRIMARY)
def test_every_ray_process_imports_the_plugin(name):
    """verl's main_ppo merges ray_kwargs.ray_init.runtime_env over its defaults and passes it to
    ray.init (verl/trainer/main_ppo.py); the merged env_vars must name the plugin's modules."""
    import importlib.util

    from verl.trainer.constants_ppo import get_ppo_ray_runtime_env

    cfg = _compose(Path(name).stem, [f"{k}={v}" for k, v in DUMMY.items()])
    default = get_ppo_ray_runtime_env(cfg)
    default.setdefault("env_vars", {})["TRANSFER_QUEUE_ENABLE"] = "1"
    merged = OmegaConf.to_container(OmegaConf.merge(default, cfg.ray_kwargs.ray_init.get("runtime_env", {})))
    modules = merged["env_vars"]["VERL_USE_EXTERNAL_MODULES"].split(",")
    assert "verl_flexrec.register" in modules and merged["env_vars"]["TRANSFER_QUEUE_ENABLE"] == "1"
    assert all(importlib.util.find_spec(m) for m in modules)


@pytest.mark.slow  # two fresh interpreters importing verl (~10 s each)
def test_a_missing_plugin_is_fatal_under_verl_use_external_modules():
    """What a Ray worker on a node without the package does at `import verl`: raise, not log at DEBUG."""
    cfg = _compose("flexrec_trainer", [f"{k}={v}" for k, v in DUMMY.items()])
    modules = cfg.ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES
    code = "import verl; from verl.trainer.ppo import core_algos; core_algos.get_adv_estimator_fn('flexrec')"
    ok = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                        env={**os.environ, "VERL_USE_EXTERNAL_MODULES": modules, "VERL_USE_EXTERNAL_PLUGINS": "none"})
    assert ok.returncode == 0, ok.stderr[-2000:]
    gone = subprocess.run([sys.executable, "-c", "import verl"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "VERL_USE_EXTERNAL_MODULES": modules.replace("verl_flexrec", "verl_flexrec_absent")})
    assert gone.returncode != 0 and "No module named 'verl_flexrec_absent'" in gone.stderr


@pytest.mark.slow  # real data prep on a fixture and prompt measurement (~30 s)
def test_a_real_launch_measures_prompts_guards_the_run_name_and_refuses_overlong(tmp_path):
    """The script's non-dry path up to verl: PYTHON is a wrapper that records the verl command
    instead of starting it and runs everything else (data prep, prompt-lengths, version check)."""
    from verl_flexrec.data.fixtures import write_movielens
    from verl_flexrec.testing import build_tiny_tokenizer

    raw = tmp_path / "data" / "raw"
    write_movielens(raw, n_users=40, n_movies=300, ratings_per_user=100)
    build_tiny_tokenizer(tmp_path / "tok")
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/usr/bin/env bash\nif [[ "$1 $2" == "-m verl.trainer.main_ppo" ]]; then printf "%s\\n" "$@" '
                       f'> "{tmp_path}/verl_args.txt"; exit 0; fi\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    env = {**os.environ, "PYTHON": str(wrapper), "DATA_DIR": str(tmp_path / "data"), "CKPT_DIR": str(tmp_path / "ckpt"),
           "DOWNLOAD": "0", "TOKENIZER": str(tmp_path / "tok"), "RUN_NAME": "real", "DRY_RUN": "0"}

    def launch(*extra, **more):
        return subprocess.run(["bash", str(RECIPE / MAIN), "single_need", "ml-1m", *extra], capture_output=True,
                              text=True, env={**env, **more}, timeout=600, cwd=tmp_path)

    first = launch()
    assert first.returncode == 0, first.stderr[-3000:]
    args = (tmp_path / "verl_args.txt").read_text().splitlines()
    cfg = _compose("flexrec_trainer", args[args.index("--config-name") + 2:])
    _verl_checks(cfg)
    data = tmp_path / "data" / "ml-1m" / "maximize_interest"
    measured = json.loads((data / "prep_info.json").read_text())["prompt_tokens"]
    assert cfg.data.max_prompt_length == measured["max_prompt_length"] >= max(measured["train"]["max"], measured["test"]["max"])
    assert cfg.actor_rollout_ref.actor.ppo_max_token_len_per_gpu == 2 * (cfg.data.max_prompt_length + 1024)
    assert f"train rows / 32 prompts per step x 5 epochs" in first.stderr
    assert (tmp_path / "ckpt" / "real" / "flexrec_launch.txt").read_text().splitlines() == args[args.index("--config-name") + 2:]

    # the same name with other settings is refused before verl starts
    (tmp_path / "verl_args.txt").unlink()
    other = launch("trainer.total_epochs=9")
    assert other.returncode == 2 and "RUN_NAME=real was started with other settings" in other.stderr
    assert not (tmp_path / "verl_args.txt").exists()
    # a prompt length that would drop rows stops with the count, before verl starts
    short = launch(MAX_PROMPT_LENGTH=str(measured["train"]["p50"]), RUN_NAME="short")
    assert short.returncode == 2 and "would drop" in short.stderr and "nothing was started" in short.stderr
    assert not (tmp_path / "verl_args.txt").exists()
