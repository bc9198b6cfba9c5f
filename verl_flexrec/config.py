"""Every FlexRec option, with the default we chose where the paper is silent.

All options live in one block of the verl config, ``algorithm.flexrec`` (the estimator receives
``config.algorithm``; the reward manager receives the whole trainer config and reads the same
block), so a run is described by one place::

    algorithm:
      adv_estimator: flexrec
      flexrec:
        reward: {swap_mode: causal, cutoff: null, gain: linear, format_bonus: 0.1, invalid_penalty: -2.0}
        advantage: {mode: flexrec, item_norm: position, add_seq_adv_to_items: false}
        uncertainty: {enable: true, weighting: discount, eps: 0.01, normalize: batch, max_scale: 3.0}

Provenance of each default is in ``docs``-style comments below: "paper" where a source states it,
"choice" where the paper (FlexRec, arXiv 2603.11901) leaves it open.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Mapping

try:  # verl's configs are DictConfigs; imported once here, not per estimator call
    from omegaconf import DictConfig, OmegaConf
except ImportError:  # pragma: no cover - omegaconf ships with verl
    DictConfig = OmegaConf = None

from .ranking.swap import SWAP_MODES
from .uncertainty import SCALE_NORMALIZATIONS, UNCERTAINTY_WEIGHTINGS

__all__ = ["AdvantageOptions", "FlexRecConfig", "RewardOptions", "UncertaintyOptions", "config_get"]

ADVANTAGE_MODES = ("flexrec", "rec_r1")
ITEM_NORMS = ("position", "pooled", "none")


@dataclass
class RewardOptions:
    # paper: causal swap with the remaining pool. Ablations: noncausal, independent; rank = Rank-GRPO.
    swap_mode: str = "causal"
    # choice: full-list NDCG inside the reward (a cut-off gives the tail no swap signal).
    cutoff: int | None = None
    # choice: linear gains (the paper does not say; exponential = 2**g - 1).
    gain: str = "linear"
    # choice (Rec-R1): a valid permutation earns format_bonus + NDCG ...
    format_bonus: float = 0.1
    # ... anything else earns invalid_penalty and no item rewards (Rec-R1 uses -2).
    invalid_penalty: float = -2.0
    # choice: the response must close a <think> block before <answer> (Rec-R1 format).
    require_think: bool = True
    # choice: None = gains/variances come filled in the parquet (`python -m verl_flexrec.critic fill`);
    # a critic checkpoint path = fill unobserved candidates live inside the reward-loop workers
    # (local, shared or hdfs://; each worker copies it with verl's copy_to_local and loads it once).
    critic_path: str | None = None
    # SHA-256 the critic file must have. null = the file as the flexrec_sync trainer finds it when
    # it starts: the trainer records its hash here, so every reward-loop worker serves that file
    # or stops (docs/cluster.md).
    critic_sha256: str | None = None
    # resuming from a checkpoint whose flexrec_provenance.json names another critic or other
    # training data is an error unless true.
    allow_changed_inputs_on_resume: bool = False

    def __post_init__(self):
        _check_choice("reward.swap_mode", self.swap_mode, SWAP_MODES)
        _check_choice("reward.gain", self.gain, ("linear", "exponential"))
        if self.cutoff is not None and int(self.cutoff) < 1:
            raise ValueError(f"algorithm.flexrec.reward.cutoff must be >= 1 or null, got {self.cutoff}")
        if self.critic_sha256 is not None:
            digest = str(self.critic_sha256).strip().lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"algorithm.flexrec.reward.critic_sha256 must be 64 hex digits or null, got {self.critic_sha256!r}")
            self.critic_sha256 = digest


@dataclass
class AdvantageOptions:
    # flexrec: item tokens get item advantages; rec_r1: every token gets the sequence GRPO advantage.
    mode: str = "flexrec"
    # choice (Rank-GRPO): normalise item rewards per rank position across the prompt's rollouts;
    # "pooled" = over all (rollout, position) pairs of the group; "none" = mean-centred only.
    # measured: position learns fastest (AUC NDCG@5 +0.029 over pooled, +0.160 over none, 8 seeds;
    # docs/benchmarks.md, Learning dynamics, dense table).
    item_norm: str = "position"
    # None = follow algorithm.norm_adv_by_std_in_grpo (verl's GRPO switch) for the sequence part.
    norm_by_std: bool | None = None
    # verl's GRPO epsilon.
    eps: float = 1e-6
    # item_norm=position divides by max(std_k, item_std_floor * RMS of the group's per-position
    # stds), so near-constant tail positions are not blown up to unit advantages; 0 = std_k + eps.
    # measured: 0.1 learns as fast as 0 and 1.0 is slower (AUC -0.013 dense, -0.009 sparse, 8 seeds;
    # docs/benchmarks.md, Learning dynamics, dense and sparse tables).
    item_std_floor: float = 0.1
    # choice: item tokens get only their item advantage (no sequence advantage added).
    add_seq_adv_to_items: bool = False

    def __post_init__(self):
        _check_choice("advantage.mode", self.mode, ADVANTAGE_MODES)
        _check_choice("advantage.item_norm", self.item_norm, ITEM_NORMS)
        if not self.item_std_floor >= 0:
            raise ValueError(f"algorithm.flexrec.advantage.item_std_floor must be >= 0, got {self.item_std_floor}")


@dataclass
class UncertaintyOptions:
    # paper: scale each rollout's advantages by 1/(u+eps). enable=false is the "raw critic" ablation.
    enable: bool = True
    # choice: u = variance of the list NDCG (discount-weighted); "sum" = unweighted sum of variances.
    weighting: str = "discount"
    # choice: eps of 1/(u+eps); u of a 10%-observed KuaiRec list is ~1e-2.
    eps: float = 1e-2
    # choice: divide c by its batch mean so fully observed rollouts (u=0) do not get 1/eps.
    # measured: batch is the only normalisation ahead of no scaling (AUC +0.009 ± 0.008, small),
    # group is worse, none is a clip constant (docs/benchmarks.md, Learning dynamics, sparse table).
    normalize: str = "batch"
    min_scale: float = 0.0
    max_scale: float = 3.0

    def __post_init__(self):
        _check_choice("uncertainty.weighting", self.weighting, UNCERTAINTY_WEIGHTINGS)
        _check_choice("uncertainty.normalize", self.normalize, SCALE_NORMALIZATIONS)
        if self.eps <= 0:
            raise ValueError(f"algorithm.flexrec.uncertainty.eps must be > 0, got {self.eps}")
        if not 0 <= self.min_scale <= self.max_scale:
            raise ValueError(
                f"algorithm.flexrec.uncertainty needs 0 <= min_scale <= max_scale, got {self.min_scale}, {self.max_scale}"
            )


@dataclass
class FlexRecConfig:
    reward: RewardOptions = field(default_factory=RewardOptions)
    advantage: AdvantageOptions = field(default_factory=AdvantageOptions)
    uncertainty: UncertaintyOptions = field(default_factory=UncertaintyOptions)

    @classmethod
    def from_any(cls, value: Any) -> "FlexRecConfig":
        """Build from ``None``, a mapping / OmegaConf node, or a FlexRecConfig; unknown keys raise."""
        if isinstance(value, FlexRecConfig):
            return value
        data = _to_plain(value) or {}
        if not isinstance(data, Mapping):
            raise TypeError(f"algorithm.flexrec must be a mapping, got {type(value).__name__}")
        unknown = set(data) - set(_SECTIONS)
        if unknown:
            raise ValueError(f"unknown key(s) in algorithm.flexrec: {sorted(unknown)}; expected reward/advantage/uncertainty")
        return cls(**{name: _build(section, data.get(name) or {}, name) for name, section in _SECTIONS.items()})

    @classmethod
    def from_algorithm_config(cls, algorithm_config: Any) -> "FlexRecConfig":
        """Read ``algorithm.flexrec`` from verl's algorithm config (DictConfig, AlgoConfig or dict)."""
        return cls.from_any(config_get(algorithm_config, "flexrec"))

    def to_dict(self) -> dict:
        return asdict(self)


def config_get(config: Any, dotted: str, default: Any = None) -> Any:
    """``config.a.b.c`` for a DictConfig, a dict or a dataclass (verl passes all three); ``default``
    when any part is missing or None."""
    node = config
    for part in dotted.split("."):
        getter = getattr(node, "get", None)
        node = getter(part, None) if callable(getter) else getattr(node, part, None)
        if node is None:
            return default
    return node


_SECTIONS = {"reward": RewardOptions, "advantage": AdvantageOptions, "uncertainty": UncertaintyOptions}


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"algorithm.flexrec.{name} must be one of {list(choices)}, got {value!r}")


def _to_plain(value: Any) -> Any:
    if value is None:
        return None
    if DictConfig is not None and isinstance(value, DictConfig):
        return OmegaConf.to_container(value, resolve=True)
    if is_dataclass(value):
        return asdict(value)
    return value


def _build(section_cls, data: Any, section: str):
    data = _to_plain(data) or {}
    if isinstance(data, section_cls):
        return data
    names = {f.name for f in fields(section_cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown key(s) in algorithm.flexrec.{section}: {sorted(unknown)}; known: {sorted(names)}")
    return section_cls(**data)
