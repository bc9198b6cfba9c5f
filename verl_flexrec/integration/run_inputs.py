"""What a FlexRec run trained with: the critic and training data files, by SHA-256.

The ``flexrec_sync`` trainer calls :func:`resolve_run_inputs` when it is constructed, before verl
starts any worker:

* ``algorithm.flexrec.reward.critic_path`` (when set) is made absolute (a relative path would be
  resolved by each Ray worker against its own working directory), fetched with verl's
  ``copy_to_local`` and hashed; the hash is written to ``algorithm.flexrec.reward.critic_sha256``
  (or checked against it when the user pinned one), and every reward-loop worker then serves
  exactly that file (:mod:`verl_flexrec.integration.critic_serving`);
* each of ``data.train_files`` (the training data, filled offline by ``critic fill`` when no live
  critic is used) is hashed, and the list hashed again into one ``train_data_sha256``.

:meth:`RunInputs.record` is written to every checkpoint as ``flexrec_provenance.json``; on resume
:func:`check_resumed_inputs` refuses a checkpoint trained with another critic or other data
unless ``algorithm.flexrec.reward.allow_changed_inputs_on_resume=true``. :meth:`RunInputs.metrics`
puts the first 24 bits of each hash in the step metrics (trackers take numbers only; 24 bits stay
exact in a float32 tensorboard scalar); the critic's full hash is also in the run's config (every
tracker records it), and both full hashes are in the log and in each checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field

from omegaconf import open_dict
from verl.utils.fs import copy_to_local, is_non_local

from ..atomic import write_text_atomic
from ..config import FlexRecConfig, config_get
from ..provenance import file_sha256, plugin_build
from .critic_serving import CriticMismatch, local_critic_path

__all__ = [
    "PROVENANCE_FILE",
    "FlexRecInputsChanged",
    "RunInputs",
    "check_resumed_inputs",
    "resolve_run_inputs",
    "write_provenance",
]

logger = logging.getLogger(__name__)

PROVENANCE_FILE = "flexrec_provenance.json"
PROVENANCE_FORMAT = "verl_flexrec.provenance/1"
_HEAD_HEX = 6  # 24 bits: exact in float32


class FlexRecInputsChanged(RuntimeError):
    """Resuming from a checkpoint that was trained with another critic or other training data."""


@dataclass
class RunInputs:
    plugin: str
    critic_path: str | None = None
    critic_sha256: str | None = None
    train_files: list[dict] = field(default_factory=list)  # [{"path": ..., "sha256": ...}]
    train_data_sha256: str | None = None

    def record(self) -> dict:
        return {"format": PROVENANCE_FORMAT, **asdict(self)}

    def metrics(self) -> dict[str, float]:
        out = {}
        for name, digest in (("critic", self.critic_sha256), ("train_data", self.train_data_sha256)):
            if digest:
                out[f"flexrec/provenance/{name}_sha256_head"] = float(int(digest[:_HEAD_HEX], 16))
        return out


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _absolute(path: str) -> str:
    return path if is_non_local(path) or "://" in path else os.path.abspath(os.path.expanduser(path))


def resolve_run_inputs(config) -> RunInputs:
    """Hash the run's critic and training files; pin the critic in ``config`` (see the module doc)."""
    reward = FlexRecConfig.from_algorithm_config(config_get(config, "algorithm")).reward
    inputs = RunInputs(plugin=plugin_build())
    if reward.critic_path:
        path = _absolute(str(reward.critic_path))
        digest = file_sha256(local_critic_path(path))
        if reward.critic_sha256 and digest != reward.critic_sha256:
            raise CriticMismatch(
                f"critic {path} has SHA-256 {digest}, but algorithm.flexrec.reward.critic_sha256 pins "
                f"{reward.critic_sha256}"
            )
        inputs.critic_path, inputs.critic_sha256 = path, digest
        with open_dict(config):
            config.algorithm.flexrec.reward.critic_path = path
            config.algorithm.flexrec.reward.critic_sha256 = digest
    for path in _as_list(config_get(config, "data.train_files")):
        local = copy_to_local(path) if is_non_local(path) else _absolute(path)
        if not os.path.isfile(local):
            raise FileNotFoundError(f"data.train_files: {path} is not a file (looked at {local})")
        inputs.train_files.append({"path": path, "sha256": file_sha256(local)})
    if inputs.train_files:
        combined = "\n".join(f"{f['sha256']}  {os.path.basename(f['path'])}" for f in inputs.train_files)
        inputs.train_data_sha256 = hashlib.sha256(combined.encode()).hexdigest()
    logger.info("verl-flexrec run inputs: %s", json.dumps(inputs.record()))
    return inputs


def write_provenance(folder: str, inputs: RunInputs) -> str:
    """Write ``flexrec_provenance.json`` into a checkpoint folder (atomically)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, PROVENANCE_FILE)
    write_text_atomic(path, json.dumps(inputs.record(), indent=1))
    return path


def check_resumed_inputs(folder: str, inputs: RunInputs, *, allow_changes: bool) -> list[str]:
    """Compare this run's inputs with those a resumed checkpoint recorded.

    Raises :class:`FlexRecInputsChanged` when the critic or the training data differ, unless
    ``allow_changes``; returns what differs (also the plugin build, which never raises)."""
    path = os.path.join(folder, PROVENANCE_FILE)
    if not os.path.exists(path):
        logger.warning("verl-flexrec: %s has no %s; cannot tell which critic and data it was trained with", folder, PROVENANCE_FILE)
        return []
    with open(path) as f:
        saved = json.load(f)
    changes, fatal = [], []
    for name, label in (("critic_sha256", "critic"), ("train_data_sha256", "training data")):
        if saved.get(name) != getattr(inputs, name):
            was = f"{saved.get(name)} ({saved.get('critic_path') if name == 'critic_sha256' else _files(saved)})"
            now = f"{getattr(inputs, name)} ({inputs.critic_path if name == 'critic_sha256' else _files(asdict(inputs))})"
            fatal.append(f"{label}: the checkpoint was trained with SHA-256 {was}, this run has {now}")
    if saved.get("plugin") != inputs.plugin:
        changes.append(f"verl-flexrec: checkpoint {saved.get('plugin')}, this run {inputs.plugin}")
    changes += fatal
    if fatal and not allow_changes:
        raise FlexRecInputsChanged(
            f"resuming from {folder}: " + "; ".join(fatal) + ". Set algorithm.flexrec.reward.allow_changed_inputs_on_resume=true "
            "to resume anyway, or start a new run (trainer.default_local_dir)"
        )
    for change in changes:
        logger.warning("verl-flexrec: resuming from %s with a change: %s", folder, change)
    return changes


def _files(record: dict) -> str:
    return ", ".join(os.path.basename(f["path"]) for f in record.get("train_files", [])) or "no files"
