"""End to end on a CPU: a run whose reward-loop workers cannot load verl-flexrec stops before its
first step, naming the worker's process and node and the missing package (issue 19, "Done when").

The tiny CPU job (``python -m verl_flexrec.cpu.tiny_job``: verl's real ``main_ppo``, Ray,
TransferQueue, the ``flexrec_sync`` trainer) runs with a ``sitecustomize`` first on every
process's ``PYTHONPATH`` that makes verl's ``RewardLoopWorker`` constructor raise what it raises
on a node without the package under the documented launch (``VERL_USE_EXTERNAL_MODULES``):
``ModuleNotFoundError: No module named 'verl_flexrec'``. Only the reward-loop workers are
affected; the trainer, rollout and agent-loop processes load the plugin as usual — the case where
verl 0.9.1 alone marks every prompt group routed to those workers as failed and trains on.
``tests/test_cluster_on_ray.py`` covers the same check with real ``RewardLoopWorker`` actors on
worker-specific ``PYTHONPATH``s (missing package with and without strict loading, another build).

Runs ~1-3 minutes on 2 cores (a 1-step warm start, then the trainer stops at ``on_init_end``);
run it under ``flock /tmp/ray.lock`` (one Ray cluster at a time).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from e2e_tiny_job import prepare

from verl_flexrec.cpu.measure import run_measured

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 900  # the trainer; the warm start has its own
SETUP_TIMEOUT_S = 900
SFT_STEPS = 1  # the run stops before it generates anything

SITECUSTOMIZE = '''
"""Test only: verl's RewardLoopWorker fails to start as on a node without verl-flexrec."""
from verl_flexrec.integration.post_import import when_imported


def _no_plugin_on_this_node(module):
    def __init__(self, *args, **kwargs):
        raise ModuleNotFoundError("No module named 'verl_flexrec'", name="verl_flexrec")

    module.RewardLoopWorker.__init__ = __init__


when_imported("verl.experimental.reward_loop.reward_loop", _no_plugin_on_this_node, loaded_marker="RewardLoopWorker")
'''


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("tiny_bad_node")
    hook = work / "site"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    prepare(work, SFT_STEPS, "FLEXREC_E2E_PREPARED_SFT1", SETUP_TIMEOUT_S)
    log = work / "run.log"
    env = {**os.environ, "TINY_CPU_SKIP_SETUP": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(hook), str(REPO), os.environ.get("PYTHONPATH")) if p)}
    with open(log, "w") as out:
        report = run_measured([sys.executable, "-m", "verl_flexrec.cpu.tiny_job", str(work)],
                              timeout=TIMEOUT_S, stdout=out, stderr=out, env=env, cwd=REPO)
    return report, log.read_text(errors="replace")


def test_the_run_stops_before_its_first_step_naming_worker_node_and_package(broken_run):
    report, text = broken_run
    assert report["returncode"] != 0, text[-4000:]
    assert not re.search(r"step:\d+ - ", text), "the trainer logged a step with a reward worker down"
    match = re.search(r"FlexRecClusterError: reward-loop worker (\d+) \(pid (\d+), node ([\d.]+)\) failed to start: "
                      r"ModuleNotFoundError: No module named 'verl_flexrec'; install the same verl-flexrec on every node",
                      text)
    assert match, text[-6000:]
    print(f"\nthe trainer stopped after {report['wall_s']:.0f} s: {match.group(0)}")
