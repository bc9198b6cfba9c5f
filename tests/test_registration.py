"""FlexRec's names reach verl's registries through the `verl.plugins` entry point alone."""

import os
import subprocess
import sys

CHECK = """
import verl  # loads entry points, nothing else of ours
from verl.experimental.reward_loop.reward_manager.registry import REWARD_MANAGER
from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY
rm = REWARD_MANAGER.get("flexrec"); est = ADV_ESTIMATOR_REGISTRY.get("flexrec")
print(getattr(rm, "__module__", None), getattr(est, "__module__", None))
"""


def _run(code, **env):
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=300)


def test_import_verl_in_a_fresh_process_registers_flexrec():
    out = _run(CHECK)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["verl_flexrec.integration.reward_manager", "verl_flexrec.integration.estimator"]


def test_plugins_disabled_means_not_registered_and_doctor_fails_loudly():
    out = _run(CHECK, VERL_USE_EXTERNAL_PLUGINS="none")
    assert out.stdout.split() == ["None", "None"]
    doctor = _run("from verl_flexrec.__main__ import main; raise SystemExit(main(['doctor']))", VERL_USE_EXTERNAL_PLUGINS="none")
    assert doctor.returncode == 1
    assert "[FAIL] reward_manager 'flexrec' is not registered" in doctor.stdout
    # the documented fallback for environments without entry points
    out = _run(CHECK, VERL_USE_EXTERNAL_PLUGINS="none", VERL_USE_EXTERNAL_MODULES="verl_flexrec.register")
    assert out.stdout.split()[0] == "verl_flexrec.integration.reward_manager"


def test_doctor_passes_and_registration_is_idempotent():
    doctor = _run("from verl_flexrec.__main__ import main; raise SystemExit(main(['doctor']))")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "FlexRec is ready." in doctor.stdout
    again = _run("import verl, importlib, verl_flexrec.register as r; r.register_all(); importlib.reload(r); print('ok')")
    assert again.returncode == 0 and again.stdout.strip() == "ok", again.stderr
