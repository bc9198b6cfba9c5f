"""A misconfigured node stops a FlexRec run loudly, under Ray (a local cluster, CPU only).

verl's own ``RewardLoopWorker`` runs as Ray actors the way ``RewardLoopManager`` starts them, each
with the environment of a node:

* ``good``: verl-flexrec as installed here;
* ``missing_strict``: no verl-flexrec, with the recipes' ``VERL_USE_EXTERNAL_MODULES`` (``import
  verl`` itself fails in that process);
* ``missing_default``: no verl-flexrec, plain verl (the entry point fails at DEBUG level and the
  reward manager is unknown);
* ``other``: another verl-flexrec build (a copy of this package with another version number).

"No verl-flexrec" is simulated with a directory first on the worker's ``PYTHONPATH`` whose
``verl_flexrec`` raises the same ``ModuleNotFoundError`` an absent package does.

The trainer-side checks are the production ones: ``check_reward_workers`` (what the
``flexrec_sync`` trainer runs when its workers are up) names the worker, its process and node and
the missing or mismatched package; and rollouts scored by the ``other`` worker, carried by verl's
agent-loop postprocess into TransferQueue (the in-memory store of ``test_trainer_seam_on_cpu``),
stop ``FlexRecTrainerSync._compute_advantage`` with the build and the process that scored them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_trainer_seam_on_cpu import ROLLOUTS, InMemoryTQ, _agent_loop_worker, _ground_truth, _response, _trainer
from transfer_queue import KVBatchMeta

import verl_flexrec
from verl_flexrec.integration.reward_manager import FlexRecRewardManager
from verl_flexrec.integration.workers import FlexRecClusterError, check_reward_workers
from verl_flexrec.provenance import plugin_build
from verl_flexrec.testing import build_tiny_tokenizer

pytestmark = pytest.mark.slow

PACKAGE = Path(verl_flexrec.__file__).resolve().parent
MANAGER = f"{FlexRecRewardManager.__module__}.{FlexRecRewardManager.__qualname__}"
OTHER_VERSION = "0.0.9"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    ray = pytest.importorskip("ray")
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    tmp = tmp_path_factory.mktemp("nodes")
    tokenizer = build_tiny_tokenizer(tmp / "tok")
    missing = tmp / "missing"
    (missing / "verl_flexrec").mkdir(parents=True)
    (missing / "verl_flexrec" / "__init__.py").write_text(
        'raise ModuleNotFoundError("No module named \'verl_flexrec\'", name="verl_flexrec")\n'
    )
    other = tmp / "other"
    shutil.copytree(PACKAGE, other / "verl_flexrec", ignore=shutil.ignore_patterns("__pycache__"))
    init = other / "verl_flexrec" / "__init__.py"
    init.write_text(init.read_text().replace(f'__version__ = "{verl_flexrec.__version__}"', f'__version__ = "{OTHER_VERSION}"'))

    config = OmegaConf.create({
        "actor_rollout_ref": {"model": {"path": str(tmp / "tok"), "tokenizer_path": None},
                              "rollout": {"n": 4, "response_length": 256}},
        "reward": {"reward_manager": {"source": "register", "name": "flexrec"},
                   "reward_model": {"enable": False, "enable_resource_pool": False},
                   "custom_reward_function": {"path": None}},
        "algorithm": {"adv_estimator": "flexrec", "gamma": 1.0, "lam": 1.0, "norm_adv_by_std_in_grpo": True,
                      "use_kl_in_reward": False, "flexrec": {}},
        "trainer": {"use_v1": True, "v1": {"trainer_mode": "flexrec_sync"}},
    })  # fmt: skip
    here = os.environ.get("PYTHONPATH", "")
    strict = "verl_flexrec.register"
    # Ray puts the driver's working directory first on every worker's sys.path: start it from a
    # directory without verl_flexrec, so each worker's PYTHONPATH decides what it imports
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"VERL_USE_EXTERNAL_MODULES": strict, "PYTHONPATH": here}})
    finally:
        os.chdir(cwd)
    Worker = ray.remote(RewardLoopWorker)

    def start(pythonpath, modules=strict):
        env = {"PYTHONPATH": os.pathsep.join(p for p in (pythonpath, here) if p), "VERL_USE_EXTERNAL_MODULES": modules}
        return Worker.options(runtime_env={"env_vars": env}).remote(config, None)

    workers = {
        "good": start(""),
        "missing_strict": start(str(missing)),
        "missing_default": start(str(missing), modules=""),
        "other": start(str(other)),
    }
    try:
        yield workers, config, tokenizer
    finally:
        ray.shutdown()


def _check(workers, *names):
    return check_reward_workers([workers[n] for n in names], plugin_build(), reward_manager=MANAGER, timeout_s=300)


def test_a_worker_with_the_plugin_passes(cluster):
    workers, _, _ = cluster
    (report,) = _check(workers, "good")
    assert report["build"] == plugin_build() and report["reward_manager"] == MANAGER
    host, pid = report["where"].split(":")
    assert host == socket.gethostname() and int(pid) != os.getpid()  # another process: the actor's


def test_a_worker_without_the_plugin_stops_the_run_naming_it(cluster):
    workers, _, _ = cluster
    with pytest.raises(FlexRecClusterError) as info:
        _check(workers, "good", "missing_strict")
    msg = str(info.value)
    assert re.match(r"reward-loop worker 1 \(pid \d+, node [\d.]+\) failed to start: ModuleNotFoundError: "
                    r"No module named 'verl_flexrec'", msg), msg
    assert "install the same verl-flexrec on every node" in msg


def test_without_external_modules_the_unknown_reward_manager_is_caught_too(cluster):
    workers, _, _ = cluster
    with pytest.raises(FlexRecClusterError, match=r"reward-loop worker 0 \(pid \d+, node [\d.]+\) failed to start: ValueError: Unknown reward manager: flexrec"):
        _check(workers, "missing_default")


def test_a_worker_with_another_build_is_named(cluster):
    workers, _, _ = cluster
    with pytest.raises(FlexRecClusterError) as info:
        _check(workers, "good", "other")
    msg = str(info.value)
    assert f"reward-loop worker 1 (process {socket.gethostname()}:" in msg
    assert f"runs verl-flexrec {OTHER_VERSION}+" in msg and f"this trainer runs {plugin_build()}" in msg


def _score_and_train(worker_handle, config, tokenizer):
    """Rollouts scored by ``worker_handle`` through verl's agent-loop postprocess, then the trainer."""
    store = InMemoryTQ()
    with contextlib.ExitStack() as stack:
        for p in store.patches():
            stack.enter_context(p)
        agent = _agent_loop_worker(None, config)
        agent.reward_loop_worker_handles = [worker_handle]  # the real Ray actor
        from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics, AgentLoopOutput

        keys = []
        for uid, orders in ROLLOUTS.items():
            for session, order in enumerate(orders):
                ids, _ = _response(tokenizer, order)
                output = AgentLoopOutput(prompt_ids=[5, 6, 7], response_ids=ids, response_mask=[1] * len(ids),
                                         num_turns=2, metrics=AgentLoopMetrics(), extra_fields={})
                kwargs = {"uid": uid, "session_id": session, "global_steps": 1, "data_source": "flexrec/test",
                          "reward_model": {"style": "rule", "ground_truth": _ground_truth(uid)},
                          "extra_info": {"split": "train", "index": 0}}
                asyncio.run(agent._agent_loop_postprocess(output, False, **kwargs))
                keys.append(f"{uid}_{session}_0")
        batch = KVBatchMeta(keys=keys, tags=[store.tags[("train", k)] for k in keys], partition_id="train")
        metrics = {}
        _trainer(config)._compute_advantage(batch, metrics)
    return metrics


def test_rollouts_scored_by_another_build_stop_the_step(cluster):
    workers, config, tokenizer = cluster
    metrics = _score_and_train(workers["good"], config, tokenizer)
    assert metrics["flexrec/valid_ratio"] > 0
    with pytest.raises(FlexRecClusterError) as info:
        _score_and_train(workers["other"], config, tokenizer)
    msg = str(info.value)
    assert msg.startswith("rollout 'p0_0_0' was scored by verl-flexrec " + OTHER_VERSION)
    assert f"in process {socket.gethostname()}:" in msg and plugin_build() in msg


def test_the_trainer_checks_its_reward_workers_before_verl_goes_on(cluster, monkeypatch):
    """``FlexRecTrainerSync.on_init_end`` (verl calls it when the workers are up, before step 1)
    asks verl's reward-loop workers, and stops before verl's own ``on_init_end`` on a bad one."""
    from types import SimpleNamespace

    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    from verl_flexrec.integration.run_inputs import RunInputs
    from verl_flexrec.integration.trainer import FlexRecTrainerSync

    workers, _, _ = cluster
    reached = []
    monkeypatch.setattr(PPOTrainerSync, "on_init_end", lambda self: reached.append(self))
    trainer = FlexRecTrainerSync.__new__(FlexRecTrainerSync)
    trainer.flexrec_inputs = RunInputs(plugin=plugin_build())
    trainer.reward_loop_manager = SimpleNamespace(reward_loop_workers=[workers["good"], workers["missing_strict"]])
    with pytest.raises(FlexRecClusterError, match=r"reward-loop worker 1 \(pid \d+, node [\d.]+\) failed to start"):
        trainer.on_init_end()
    assert reached == []
    trainer.reward_loop_manager = SimpleNamespace(reward_loop_workers=[workers["good"]])
    trainer.on_init_end()
    assert reached == [trainer]
