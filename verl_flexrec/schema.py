"""The ground-truth record every FlexRec parquet row carries in ``reward_model.ground_truth``.

One contract shared by data prep (writes it), the critic (reads observed interest, writes fills),
the reward manager (reads gains and variances) and evaluation. Stored as a parquet struct of
equal-length lists (one entry per candidate, in prompt order); a JSON string of the same mapping is
accepted too, so hand-written datasets need no struct support.

Fields (K = number of candidates):

===============  ===========  ==================================================================
field            type         meaning
===============  ===========  ==================================================================
candidates       list[str]    ids exactly as shown in the prompt (what the model must output)
gains            list[float]  need-specific gain used by rewards and metrics; for an unobserved
                              candidate the filled value (critic mean * need weight), 0 before fill
observed         list[bool]   True where the gain comes from a real interaction
gain_var         list[float]  variance of each gain: 0 where observed, critic variance * weight**2
                              where filled; empty list = no uncertainty information
need             str          need registry name (``verl_flexrec.needs``)
user_id          str          dataset user id (the query id for ESCI)
item_ids         list[str]    dataset item ids of the candidates (critic input)
interest         list[float]  base signal of the need (watch ratio, rating, ESCI gain); 0 where
                              unobserved
need_weight      list[float]  deterministic need weight, ``gains == interest * need_weight``
                              where observed
categories       list[str]    the candidates' categories, ``|``-joined (critic side information)
===============  ===========  ==================================================================
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

import numpy as np

__all__ = ["GroundTruth", "GroundTruthError"]


class GroundTruthError(ValueError):
    """A ground-truth record is malformed; the message names the field."""


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return value.tolist()
    return list(value)


@dataclass
class GroundTruth:
    candidates: list[str]
    gains: list[float]
    observed: list[bool] = field(default_factory=list)
    gain_var: list[float] = field(default_factory=list)
    need: str = "maximize_interest"
    user_id: str = ""
    item_ids: list[str] = field(default_factory=list)
    interest: list[float] = field(default_factory=list)
    need_weight: list[float] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.candidates = [str(c) for c in _as_list(self.candidates)]
        k = len(self.candidates)
        if k == 0:
            raise GroundTruthError("ground_truth.candidates is empty")
        if len(set(self.candidates)) != k:
            dup = sorted({c for c in self.candidates if self.candidates.count(c) > 1})
            raise GroundTruthError(f"ground_truth.candidates has duplicate ids {dup[:5]}")
        self.gains = [float(g) for g in _as_list(self.gains)]
        self.observed = [bool(o) for o in _as_list(self.observed)] or [True] * k
        self.gain_var = [float(v) for v in _as_list(self.gain_var)]
        self.item_ids = [str(i) for i in _as_list(self.item_ids)]
        self.interest = [float(x) for x in _as_list(self.interest)]
        self.need_weight = [float(x) for x in _as_list(self.need_weight)]
        self.categories = [str(c) for c in _as_list(self.categories)]
        self.need = str(self.need)
        self.user_id = str(self.user_id)
        for name in ("gains", "observed", "gain_var", "item_ids", "interest", "need_weight", "categories"):
            values = getattr(self, name)
            if name in ("gains", "observed") or values:
                if len(values) != k:
                    raise GroundTruthError(f"ground_truth.{name} has {len(values)} entries, candidates has {k}")
        for name in ("gains", "gain_var"):
            for i, v in enumerate(getattr(self, name)):
                if not math.isfinite(v) or v < 0:
                    raise GroundTruthError(f"ground_truth.{name}[{i}] = {v!r}: must be finite and >= 0")

    # -- conversions -------------------------------------------------------------------------
    @classmethod
    def from_any(cls, value: Any) -> "GroundTruth":
        """Build from a parquet struct (dict / numpy arrays), a JSON string, or a GroundTruth."""
        if isinstance(value, GroundTruth):
            return value
        if isinstance(value, (str, bytes)):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as e:
                raise GroundTruthError(f"ground_truth is a string but not JSON: {e}") from None
        if not isinstance(value, Mapping):
            raise GroundTruthError(f"ground_truth must be a mapping or JSON string, got {type(value).__name__}")
        known = cls.__dataclass_fields__.keys()
        missing = [k for k in ("candidates", "gains") if k not in value]
        if missing:
            raise GroundTruthError(f"ground_truth is missing field(s) {missing}")
        return cls(**{k: v for k, v in value.items() if k in known})

    def to_dict(self) -> dict:
        # shallow on purpose: dataclasses.asdict deep-copies every list (half of data-prep time)
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    # -- views ------------------------------------------------------------------------------
    @property
    def num_candidates(self) -> int:
        return len(self.candidates)

    def gains_array(self) -> np.ndarray:
        return np.asarray(self.gains, dtype=np.float64)

    def var_array(self) -> np.ndarray:
        """Per-candidate gain variance; zeros when the record carries none."""
        if not self.gain_var:
            return np.zeros(self.num_candidates, dtype=np.float64)
        return np.asarray(self.gain_var, dtype=np.float64)

    def index_of(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.candidates)}
