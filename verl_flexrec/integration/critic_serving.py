"""The live critic (``algorithm.flexrec.reward.critic_path``) in verl's reward-loop workers.

Each worker resolves ``critic_path`` with verl's own ``verl.utils.fs.copy_to_local`` (an
``hdfs://`` file is copied once per node into verl's cache, under verl's file lock; a local or
shared path is used where it is) and loads it with
:func:`verl_flexrec.critic.predictor.get_predictor`: once per process, behind a lock, in serving
form, hashing exactly the bytes it loads. The SHA-256 must equal
``algorithm.flexrec.reward.critic_sha256``, which the ``flexrec_sync`` trainer sets when it starts
(:func:`verl_flexrec.integration.run_inputs.resolve_run_inputs`), so every worker serves the file
the trainer recorded or stops with the reason. A stale ``hdfs://`` copy in a node's cache is
fetched again once before that check fails.
"""

from __future__ import annotations

import logging
import os

from verl.utils.fs import copy_to_local, is_non_local

from ..critic.predictor import CriticPredictor, get_predictor

__all__ = ["CriticMismatch", "local_critic_path", "serve_critic"]

logger = logging.getLogger(__name__)


class CriticMismatch(RuntimeError):
    """The critic file is not the one the run recorded (changed, or another copy on this node)."""


def local_critic_path(critic_path: str, *, recopy: bool = False) -> str:
    """A path on this node's disk for ``critic_path`` (verl's ``copy_to_local``)."""
    local = copy_to_local(str(critic_path), always_recopy=recopy)
    if not os.path.isabs(local):
        raise ValueError(
            f"algorithm.flexrec.reward.critic_path={critic_path!r} is relative; Ray workers on other nodes resolve it "
            "against their own working directory: give an absolute path or a URI (hdfs://...)"
        )
    return local


def serve_critic(critic_path: str, expected_sha256: str | None = None) -> CriticPredictor:
    """The process's critic for ``critic_path``, checked against ``expected_sha256`` when given."""
    local = local_critic_path(critic_path)
    predictor = get_predictor(local)
    if expected_sha256 and predictor.sha256 != expected_sha256 and is_non_local(str(critic_path)):
        logger.warning("verl-flexrec: cached copy %s of %s has another SHA-256; fetching it again", local, critic_path)
        predictor = get_predictor(local_critic_path(critic_path, recopy=True))
    if expected_sha256 and predictor.sha256 != expected_sha256:
        where = "" if local == str(critic_path) else f" (this node's copy: {local})"
        raise CriticMismatch(
            f"critic {critic_path}{where} has SHA-256 {predictor.sha256}, but this run expects {expected_sha256} "
            "(algorithm.flexrec.reward.critic_sha256, recorded by the trainer when the run started): the file was "
            "rewritten since, or this node sees another file at that path. Restore the file, or start a new run "
            "(docs/cluster.md, Critic serving)"
        )
    return predictor
