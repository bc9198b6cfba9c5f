"""What a FlexRec run trained with (critic, training data), recorded and checked on resume.

``resolve_run_inputs`` is what the ``flexrec_sync`` trainer's constructor runs; the checkpoint hooks
are driven through ``FlexRecTrainerMixin`` on a stand-in for verl's trainer whose
``_save_checkpoint``/``_load_checkpoint`` do what verl's do to the folder and ``global_steps``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import verl_flexrec.register  # noqa: F401
from verl_flexrec.integration.critic_serving import CriticMismatch
from verl_flexrec.integration.run_inputs import PROVENANCE_FILE, FlexRecInputsChanged, resolve_run_inputs
from verl_flexrec.integration.trainer import FlexRecTrainerMixin
from verl_flexrec.provenance import plugin_build


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def files(tmp_path):
    (tmp_path / "critic.pt").write_bytes(b"critic v1")
    (tmp_path / "train.parquet").write_bytes(b"rows v1")
    (tmp_path / "more.parquet").write_bytes(b"more rows")
    return tmp_path


def _config(files, critic="critic.pt", **reward):
    return OmegaConf.create({
        "algorithm": {"adv_estimator": "flexrec", "flexrec": {"reward": {"critic_path": critic, **reward}}},
        "reward": {"reward_manager": {"name": "flexrec"}},
        "data": {"train_files": [str(files / "train.parquet"), str(files / "more.parquet")]},
        "trainer": {"default_local_dir": str(files / "ckpt"), "resume_mode": "auto", "resume_from_path": None},
    })  # fmt: skip


def test_inputs_are_hashed_and_the_critic_pinned_for_the_workers(files, monkeypatch):
    monkeypatch.chdir(files)  # a relative critic_path is resolved once, by the trainer
    config = _config(files)
    inputs = resolve_run_inputs(config)
    assert inputs.critic_path == str(files / "critic.pt") and inputs.critic_sha256 == _sha(b"critic v1")
    assert config.algorithm.flexrec.reward.critic_path == str(files / "critic.pt")
    assert config.algorithm.flexrec.reward.critic_sha256 == _sha(b"critic v1")
    assert [f["sha256"] for f in inputs.train_files] == [_sha(b"rows v1"), _sha(b"more rows")]
    combined = f"{_sha(b'rows v1')}  train.parquet\n{_sha(b'more rows')}  more.parquet"
    assert inputs.train_data_sha256 == _sha(combined.encode())
    assert inputs.plugin == plugin_build()
    metrics = inputs.metrics()
    assert metrics["flexrec/provenance/critic_sha256_head"] == int(_sha(b"critic v1")[:6], 16)
    assert metrics["flexrec/provenance/train_data_sha256_head"] == int(inputs.train_data_sha256[:6], 16)


def test_a_pinned_critic_hash_must_match(files):
    with pytest.raises(CriticMismatch, match="pins " + "0" * 64):
        resolve_run_inputs(_config(files, critic=str(files / "critic.pt"), critic_sha256="0" * 64))
    with pytest.raises(ValueError, match="64 hex digits"):
        resolve_run_inputs(_config(files, critic=str(files / "critic.pt"), critic_sha256="abc"))
    config = _config(files, critic=str(files / "critic.pt"), critic_sha256=_sha(b"critic v1").upper())
    assert resolve_run_inputs(config).critic_sha256 == _sha(b"critic v1")


def test_missing_training_file_is_named(files):
    config = _config(files, critic=None)
    config.data.train_files = [str(files / "nope.parquet")]
    with pytest.raises(FileNotFoundError, match="data.train_files: .*nope.parquet"):
        resolve_run_inputs(config)


def _write_verl_files(step_folder: Path) -> None:
    """verl's files of a complete save (one rank), which the resume-point check looks for."""
    import torch

    (step_folder / "actor").mkdir(parents=True, exist_ok=True)
    torch.save({}, step_folder / "actor" / "model_world_size_1_rank_0.pt")
    torch.save({}, step_folder / "data.pt")


class _VerlTrainer:
    """What verl's PPOTrainer does that the mixin relies on (folder layout, global_steps)."""

    def __init__(self, config):
        self.config, self.global_steps, self.saved = config, 0, []

    def _save_checkpoint(self):
        folder = os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}")
        self.saved.append(sorted(os.listdir(folder)))  # what was there when verl started saving
        _write_verl_files(Path(folder))
        with open(os.path.join(self.config.trainer.default_local_dir, "latest_checkpointed_iteration.txt"), "w") as f:
            f.write(str(self.global_steps))

    def _load_checkpoint(self):
        latest = os.path.join(self.config.trainer.default_local_dir, "latest_checkpointed_iteration.txt")
        self.global_steps = int(Path(latest).read_text()) if os.path.exists(latest) else 0


class _Trainer(FlexRecTrainerMixin, _VerlTrainer):
    pass


def test_checkpoints_record_inputs_and_resume_refuses_changed_ones(files):
    run = _Trainer(_config(files, critic=str(files / "critic.pt")))
    run._load_checkpoint()  # from scratch: nothing to compare
    run.global_steps = 3
    run._save_checkpoint()
    assert run.saved == [[PROVENANCE_FILE]]  # written before verl's own files
    record = json.loads((files / "ckpt" / "global_step_3" / PROVENANCE_FILE).read_text())
    assert record["format"] == "verl_flexrec.provenance/1" and record["critic_sha256"] == _sha(b"critic v1")
    assert record["train_files"][0] == {"path": str(files / "train.parquet"), "sha256": _sha(b"rows v1")}

    resumed = _Trainer(_config(files, critic=str(files / "critic.pt")))
    resumed._load_checkpoint()  # same inputs: fine
    assert resumed.global_steps == 3

    (files / "critic.pt").write_bytes(b"critic v2")
    with pytest.raises(FlexRecInputsChanged, match=r"global_step_3: critic: the checkpoint was trained with SHA-256 .*allow_changed_inputs_on_resume"):
        _Trainer(_config(files, critic=str(files / "critic.pt")))._load_checkpoint()
    (files / "critic.pt").write_bytes(b"critic v1")
    (files / "more.parquet").write_bytes(b"other rows")
    with pytest.raises(FlexRecInputsChanged, match="training data: .*train.parquet, more.parquet"):
        _Trainer(_config(files, critic=str(files / "critic.pt")))._load_checkpoint()
    allowed = _Trainer(_config(files, critic=str(files / "critic.pt"), allow_changed_inputs_on_resume=True))
    allowed._load_checkpoint()
    assert allowed.global_steps == 3


def test_resume_from_a_checkpoint_without_a_record_warns(files, caplog):
    _write_verl_files(files / "ckpt" / "global_step_2")
    (files / "ckpt" / "latest_checkpointed_iteration.txt").write_text("2")
    trainer = _Trainer(_config(files, critic=None))
    trainer._load_checkpoint()
    assert trainer.global_steps == 2 and "has no flexrec_provenance.json" in caplog.text


def test_runs_without_flexrec_record_nothing(files):
    config = _config(files)
    config.algorithm.adv_estimator, config.reward.reward_manager.name = "grpo", "naive"
    trainer = _Trainer(config)
    assert trainer.flexrec_inputs is None
    trainer.global_steps = 1
    os.makedirs(files / "ckpt" / "global_step_1")
    trainer._save_checkpoint()
    assert trainer.saved == [[]]
