"""Which needs a run prepares (checked against what the dataset can provide) and which context
gets which need."""

from __future__ import annotations

from typing import Sequence

from ..needs import BUILTIN_NEEDS, Need, get_need, load_needs_yaml
from .io import DataPrepError
from .seeded import rng_for

__all__ = ["assign_needs", "resolve_needs", "split_needs"]


def resolve_needs(spec: str, *, features: Sequence[str], side_info: Sequence[str], dataset: str,
                  yaml_names: Sequence[str] = ()) -> list[Need]:
    """Parse ``a,b,c`` or ``all`` (the built-in needs + this run's ``--needs-yaml`` ones) into needs
    this dataset can serve. ``all`` never picks up needs another caller registered in this process."""
    if spec.strip() == "all":
        needs = [get_need(n) for n in sorted({*BUILTIN_NEEDS, *yaml_names})]
        needs = [n for n in needs if set(n.features) <= set(features) and set(n.side_info) <= set(side_info)]
        if not needs:
            raise DataPrepError(f"--needs all: no registered need can be served by {dataset}")
        return needs
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise DataPrepError("--needs: no need given")
    needs = []
    for name in names:
        try:
            need = get_need(name)
        except KeyError as e:
            raise DataPrepError(str(e.args[0])) from None
        lacking = [f for f in need.features if f not in features]
        if lacking:
            raise DataPrepError(
                f"need {name!r} uses candidate feature(s) {lacking}, which {dataset} does not provide "
                f"(available: {list(features)})"
            )
        lacking = [s for s in need.side_info if s not in side_info]
        if lacking:
            raise DataPrepError(
                f"need {name!r} shows side info {lacking}, which {dataset} does not have (available: {list(side_info)})"
            )
        if need not in needs:
            needs.append(need)
    return needs


def split_needs(args, *, features: Sequence[str], side_info: Sequence[str], dataset: str) -> tuple[list[Need], list[Need]]:
    """(train needs, test needs) from --needs / --train-needs / --test-needs / --needs-yaml."""
    yaml_names: list[str] = []
    if args.needs_yaml is not None:
        try:
            yaml_names = [need.name for need in load_needs_yaml(args.needs_yaml)]
        except (ValueError, FileNotFoundError) as e:
            raise DataPrepError(str(e)) from None
    kw = dict(features=features, side_info=side_info, dataset=dataset, yaml_names=yaml_names)
    train = resolve_needs(args.train_needs or args.needs, **kw)
    test = resolve_needs(args.test_needs or args.needs, **kw)
    return train, test


def assign_needs(tasks: Sequence, needs: Sequence[Need], *, mix: str, seed: int, split: str) -> list[tuple]:
    """(task, need) pairs: every need per task ('all') or one need drawn uniformly ('sample')."""
    if mix == "all" or len(needs) == 1:
        pairs = [(t, n) for t in tasks for n in needs]
    else:
        draw = rng_for(seed, "need-mix", split).integers(len(needs), size=len(tasks))
        pairs = [(t, needs[j]) for t, j in zip(tasks, draw)]
    if split == "train":  # interleave users and needs; verl shuffles again, but batches stay mixed
        order = rng_for(seed, "train-order").permutation(len(pairs))
        pairs = [pairs[i] for i in order]
    return pairs
