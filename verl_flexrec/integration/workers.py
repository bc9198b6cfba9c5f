"""The trainer's checks that every reward-loop worker runs this trainer's verl-flexrec.

verl 0.9.1 starts one ``RewardLoopWorker`` Ray actor per ``reward.num_workers``, round-robin over
the nodes, without waiting for them; a worker whose constructor fails (no ``verl_flexrec`` on its
node: ``Unknown reward manager: flexrec``, or the import error under ``VERL_USE_EXTERNAL_MODULES``)
fails every rollout routed to it, the prompt groups are marked failed but still trained on
(``trainer.v1.sampler.sync_refill_failed_groups`` defaults to false) and the run goes on with
ERROR lines only. Two checks make that loud:

* :func:`check_reward_workers`, when the trainer has started its workers (``on_init_end``): every
  reward-loop worker is asked, through Ray's ``__ray_call__``, which verl-flexrec build it runs,
  which reward manager it constructed and which critic it serves. A worker that failed to start
  raises here with Ray's record of the failure (its node address, process id and exception).
* :func:`check_rollout_stamps`, every step: each rollout's ``flexrec_plugin`` stamp
  (:mod:`verl_flexrec.provenance`) must name the trainer's build; the error names the rollout,
  the build and the ``host:pid`` that scored it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..provenance import PLUGIN_KEY, parse_stamp

__all__ = ["FlexRecClusterError", "check_reward_workers", "check_rollout_stamps"]

WORKER_TIMEOUT_S = 600.0
FIX = "install the same verl-flexrec on every node (docs/cluster.md)"


class FlexRecClusterError(RuntimeError):
    """A verl process runs without verl-flexrec, or with another build of it."""


def check_rollout_stamps(keys: Sequence[str], infos: Sequence[dict | None], expected_build: str) -> None:
    """Raise unless every rollout's FlexRec data (``None``: a row without it) was scored by ``expected_build``."""
    checked: set[Any] = set()
    for key, info in zip(keys, infos):
        if info is None:
            continue
        stamp = info.get(PLUGIN_KEY)
        if stamp in checked:
            continue
        if stamp is None:
            raise FlexRecClusterError(
                f"rollout {key!r} carries FlexRec data without {PLUGIN_KEY!r}: it was scored by a verl-flexrec "
                f"older than this trainer's {expected_build}; {FIX}"
            )
        build, where = parse_stamp(stamp)
        if build != expected_build:
            raise FlexRecClusterError(
                f"rollout {key!r} was scored by verl-flexrec {build} in process {where}, this trainer runs "
                f"{expected_build}{_same_version_note(build, expected_build)}; {FIX}"
            )
        checked.add(stamp)


def _same_version_note(build: str, expected: str) -> str:
    if build.split("+")[0] == expected.split("+")[0]:
        return " (same version number, other source files: an edited or different checkout)"
    return ""


def _worker_report():
    """The function each worker runs; built here so that cloudpickle ships it by value (a worker
    without verl_flexrec can still run it and say so)."""

    def report(worker) -> dict:
        import os
        import socket

        out: dict[str, Any] = {"where": f"{socket.gethostname()}:{os.getpid()}"}
        try:
            import ray

            out["node_ip"] = ray.util.get_node_ip_address()
        except Exception:  # noqa: BLE001 - informational only
            pass
        try:
            from verl_flexrec.provenance import plugin_build

            out["build"] = plugin_build()
        except Exception as e:  # noqa: BLE001 - reported to the trainer
            out["error"] = f"{type(e).__name__}: {e}"
        manager = getattr(worker, "reward_manager", None)
        out["reward_manager"] = f"{type(manager).__module__}.{type(manager).__qualname__}"
        out["critic_sha256"] = getattr(getattr(manager, "critic", None), "sha256", None)
        return out

    return report


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_WHERE = re.compile(r"pid=(\d+), ip=([^,)\s]+)")


def _failure(name: str, error: BaseException) -> str:
    """``<name> (pid P, node IP) failed to start: <exception line>`` from Ray's record of a failed actor."""
    text = _ANSI.sub("", str(error))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    where = _WHERE.search(text)
    at = f" (pid {where.group(1)}, node {where.group(2)})" if where else ""
    return f"{name}{at} failed to start: {lines[-1] if lines else type(error).__name__}"


def check_reward_workers(
    handles: Sequence[Any],
    expected_build: str,
    *,
    reward_manager: str,
    critic_sha256: str | None = None,
    timeout_s: float = WORKER_TIMEOUT_S,
) -> list[dict]:
    """Ask every reward-loop worker what it runs; raise :class:`FlexRecClusterError` on the first
    that failed to start, does not answer within ``timeout_s``, runs another build or reward
    manager, or serves another critic. Returns the workers' reports."""
    import ray

    report = _worker_report()
    refs = [handle.__ray_call__.remote(report) for handle in handles]
    _, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    pending = set(pending)
    reports = []
    for i, ref in enumerate(refs):
        name = f"reward-loop worker {i}"
        if ref in pending:
            raise FlexRecClusterError(f"{name} did not answer within {timeout_s:.0f} s (still starting, or stuck)")
        try:
            got = ray.get(ref)
        except ray.exceptions.RayActorError as e:
            raise FlexRecClusterError(f"{_failure(name, e)}; {FIX}") from None
        where = f"{name} (process {got['where']}, node {got.get('node_ip', '?')})"
        if "error" in got:
            raise FlexRecClusterError(f"{where} cannot import verl_flexrec: {got['error']}; {FIX}")
        if got["build"] != expected_build:
            raise FlexRecClusterError(
                f"{where} runs verl-flexrec {got['build']}, this trainer runs {expected_build}"
                f"{_same_version_note(got['build'], expected_build)}; {FIX}"
            )
        if got["reward_manager"] != reward_manager:
            raise FlexRecClusterError(f"{where} runs reward manager {got['reward_manager']}, expected {reward_manager}")
        if critic_sha256 and got["critic_sha256"] != critic_sha256:
            raise FlexRecClusterError(
                f"{where} serves the critic with SHA-256 {got['critic_sha256']}, the run recorded {critic_sha256}"
            )
        reports.append(got)
    return reports
