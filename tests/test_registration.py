"""FlexRec's names reach verl's registries through the `verl.plugins` entry point alone."""

import os
import subprocess
import sys

import pytest

CHECK = """
import verl  # loads entry points, nothing else of ours
from verl.experimental.reward_loop.reward_manager.registry import REWARD_MANAGER
from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY
rm = REWARD_MANAGER.get("flexrec"); est = ADV_ESTIMATOR_REGISTRY.get("flexrec")
import sys
lazy = "verl.trainer.ppo.v1" not in sys.modules  # the trainer waits for verl to load its V1 package
from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY  # what TaskRunnerV1.run imports
tr = TRAINER_REGISTRY.get("flexrec_sync")
print(getattr(rm, "__module__", None), getattr(est, "__module__", None), getattr(tr, "__module__", None), lazy)
"""


def _run(code, **env):
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=300)


@pytest.mark.slow  # fresh interpreters importing verl (~7 s of CPU each)
def test_import_verl_in_a_fresh_process_registers_flexrec():
    out = _run(CHECK)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "verl_flexrec.integration.reward_manager",
        "verl_flexrec.integration.estimator",
        "verl_flexrec.integration.trainer",
        "True",  # `import verl` alone did not import verl's V1 trainer (the entry point stays cheap)
    ]


@pytest.mark.slow  # fresh interpreters importing verl (~7 s of CPU each)
def test_plugins_disabled_means_not_registered_and_doctor_fails_loudly():
    out = _run(CHECK, VERL_USE_EXTERNAL_PLUGINS="none")
    assert out.stdout.split() == ["None", "None", "None", "True"]
    doctor = _run("from verl_flexrec.__main__ import main; raise SystemExit(main(['doctor']))", VERL_USE_EXTERNAL_PLUGINS="none")
    assert doctor.returncode == 1
    assert "[FAIL] reward_manager 'flexrec' is not registered" in doctor.stdout
    assert "[FAIL] trainer 'flexrec_sync' is not registered" in doctor.stdout
    # the documented fallback for environments without entry points
    out = _run(CHECK, VERL_USE_EXTERNAL_PLUGINS="none", VERL_USE_EXTERNAL_MODULES="verl_flexrec.register")
    assert out.stdout.split()[:3] == [
        "verl_flexrec.integration.reward_manager",
        "verl_flexrec.integration.estimator",
        "verl_flexrec.integration.trainer",
    ]


@pytest.mark.slow  # fresh interpreters importing verl (~7 s of CPU each)
def test_doctor_passes_and_registration_is_idempotent():
    doctor = _run("from verl_flexrec.__main__ import main; raise SystemExit(main(['doctor']))")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "FlexRec is ready." in doctor.stdout
    assert "[ok]   trainer 'flexrec_sync' -> verl_flexrec.integration.trainer.FlexRecTrainerSync" in doctor.stdout
    again = _run("import verl, importlib, verl_flexrec.register as r; r.register_all(); importlib.reload(r); print('ok')")
    assert again.returncode == 0 and again.stdout.strip() == "ok", again.stderr


def test_post_import_hook_runs_once_after_the_module_body_and_never_breaks_the_import(tmp_path, monkeypatch, caplog):
    """The mechanism that registers `flexrec_sync` when verl imports verl.trainer.ppo.v1."""
    from verl_flexrec.integration.post_import import _Loader, when_imported

    pkg = tmp_path / "flexrec_hook_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from . import sub\nDONE = sub.VALUE\n")
    (pkg / "sub.py").write_text("VALUE = 7\n")
    (tmp_path / "flexrec_hook_broken.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []

    def record(module):
        seen.append((module.__name__, getattr(module, "DONE", None)))

    def boom(module):
        raise RuntimeError("registration failed")

    when_imported("flexrec_hook_probe", record, loaded_marker="DONE")
    when_imported("flexrec_hook_probe", record, loaded_marker="DONE")  # same callback twice: once
    when_imported("flexrec_hook_broken", boom)
    try:
        import flexrec_hook_broken  # noqa: F401 - a failing callback is logged, the import succeeds
        import flexrec_hook_probe
        import flexrec_hook_probe.sub  # noqa: F401

        assert seen == [("flexrec_hook_probe", 7)]  # after the whole body ran, exactly once
        assert not isinstance(flexrec_hook_probe.__loader__, _Loader)  # the original loader is back
        assert "registration failed" in caplog.text
        when_imported("flexrec_hook_probe", record, loaded_marker="DONE")  # already loaded: runs now
        assert len(seen) == 2
    finally:
        for name in ("flexrec_hook_probe", "flexrec_hook_probe.sub", "flexrec_hook_broken"):
            sys.modules.pop(name, None)


UPSTREAM = """
import verl  # with VERL_USE_EXTERNAL_PLUGINS=none: nothing of ours yet
from verl.trainer.ppo import core_algos

def compute_flexrec_outcome_advantage(*args, **kwargs):  # what the upstream series registers
    raise AssertionError("not called here")

compute_flexrec_outcome_advantage.__module__ = "verl.trainer.ppo.core_algos"
core_algos.register_adv_est("flexrec")(compute_flexrec_outcome_advantage)

import verl_flexrec.register  # the plugin on a verl that already has FlexRec: must not raise
from verl.experimental.reward_loop.reward_manager.registry import REWARD_MANAGER
from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY
print(core_algos.ADV_ESTIMATOR_REGISTRY["flexrec"] is compute_flexrec_outcome_advantage,
      REWARD_MANAGER["flexrec"].__module__, TRAINER_REGISTRY["flexrec_sync"].__module__)
from verl_flexrec.doctor import run_doctor
run_doctor()
"""


@pytest.mark.slow  # a fresh interpreter importing verl (~7 s of CPU)
def test_on_a_verl_with_its_own_flexrec_estimator_the_plugin_keeps_it():
    """docs/upstreaming.md: with the upstream series applied, verl registers `flexrec` itself."""
    out = _run(UPSTREAM, VERL_USE_EXTERNAL_PLUGINS="none")
    assert out.returncode == 0, out.stderr
    first, *doctor = out.stdout.splitlines()
    assert first.split() == ["True", "verl_flexrec.integration.reward_manager", "verl_flexrec.integration.trainer"]
    assert any("adv_estimator 'flexrec' -> verl.trainer.ppo.core_algos.compute_flexrec_outcome_advantage (verl's own" in line
               for line in doctor), doctor
