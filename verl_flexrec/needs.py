"""Need definitions: what the user asks for, and the gain it gives each candidate.

A need is the explicit instruction FlexRec conditions on ("maximize my interest", "explore new
topics", ...). Every need here has the same shape, which keeps the critic's variance exact:

    gain(a) = base(a) * prod_f feature_f(a) ** exponent_f

``base`` is the uncertain signal (``interest``: KuaiRec watch ratio, ML rating; or ``esci_gain``)
and the product is a deterministic *need weight* computed from side information. Because the gain
is linear in the base, a critic that predicts the base with mean mu and variance s2 gives the gain
mean ``w * mu`` and variance ``w**2 * s2`` (see ``verl_flexrec.critic``).

Candidate features the built-in needs read (data prep writes them, one value per candidate):

- ``interest``     >= 0, the user's interest (watch ratio / star rating).
- ``novel_topic``  1.0 when none of the candidate's categories appears in the user's history.
- ``popularity``   recent popularity in [0, 1]: plays (KuaiRec) or ratings (MovieLens) in the
                   last day/window before the cut-off, divided by the maximum over the candidate set.
- ``esci_gain``    ESCI label mapped through :data:`ESCI_GAINS`.

User-defined needs come from YAML (:func:`load_needs_yaml`)::

    - name: hidden_gems
      title: Hidden Gems
      instruction: Rank first the movies I would love that few people are watching right now.
      base: interest
      weights: {novel_topic: 1.0}
      side_info: [category]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

__all__ = [
    "ESCI_GAINS",
    "Need",
    "get_need",
    "list_needs",
    "load_needs_yaml",
    "register_need",
]

# Amazon ESCI convention (Reddy et al. 2022, the KDD Cup task-1 nDCG gains): Exact, Substitute,
# Complement, Irrelevant.
ESCI_GAINS: dict[str, float] = {"E": 1.0, "S": 0.1, "C": 0.01, "I": 0.0}

# Side-information fields a prompt may show for a candidate.
KNOWN_SIDE_INFO = ("title", "category", "popularity", "product_text")


@dataclass(frozen=True)
class Need:
    """One need: its prompt text and its gain function.

    Attributes:
        name: registry key (snake case), stored in every parquet row.
        title: human name as the paper writes it ("Maximizing Interest").
        instruction: the sentence shown to the LLM in the prompt.
        base: candidate feature carrying the uncertain signal the critic predicts.
        weights: ``{feature: exponent}``; the need weight is ``prod feature ** exponent``.
        side_info: candidate fields the prompt must show for the need to be solvable.
    """

    name: str
    title: str
    instruction: str
    base: str = "interest"
    weights: Mapping[str, float] = field(default_factory=dict)
    side_info: tuple[str, ...] = ("title", "category")

    def __post_init__(self):
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"need name must be a non-empty snake_case identifier, got {self.name!r}")
        if not self.instruction.strip():
            raise ValueError(f"need {self.name!r}: instruction text is empty")
        for feat, exp in self.weights.items():
            if not isinstance(exp, (int, float)) or not math.isfinite(exp):
                raise ValueError(f"need {self.name!r}: exponent of {feat!r} must be a finite number, got {exp!r}")
        unknown = set(self.side_info) - set(KNOWN_SIDE_INFO)
        if unknown:
            raise ValueError(f"need {self.name!r}: unknown side_info {sorted(unknown)}; known: {KNOWN_SIDE_INFO}")

    @property
    def features(self) -> tuple[str, ...]:
        """Every candidate feature the gain reads."""
        return (self.base, *self.weights)

    def weight(self, features: Mapping[str, Iterable[float]]) -> np.ndarray:
        """Deterministic need weight ``prod_f feature_f ** exponent_f`` per candidate."""
        w = None
        for feat, exp in self.weights.items():
            if feat not in features:
                raise KeyError(f"need {self.name!r} needs candidate feature {feat!r}; got {sorted(features)}")
            x = np.asarray(features[feat], dtype=np.float64)
            term = np.power(x, exp)
            w = term if w is None else w * term
        if w is None:
            n = len(np.asarray(features[self.base])) if self.base in features else 0
            return np.ones(n, dtype=np.float64)
        return w

    def gain(self, features: Mapping[str, Iterable[float]]) -> np.ndarray:
        """Need-specific gain ``base * weight`` per candidate (float64, >= 0 for valid inputs)."""
        if self.base not in features:
            raise KeyError(f"need {self.name!r} needs candidate feature {self.base!r}; got {sorted(features)}")
        base = np.asarray(features[self.base], dtype=np.float64)
        return base * self.weight(features)


_REGISTRY: dict[str, Need] = {}


def register_need(need: Need, *, overwrite: bool = False) -> Need:
    """Add a need to the registry; re-registering the same definition is a no-op."""
    old = _REGISTRY.get(need.name)
    if old is not None and old != need and not overwrite:
        raise ValueError(f"need {need.name!r} is already registered with a different definition")
    _REGISTRY[need.name] = need
    return need


def get_need(name: str) -> Need:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown need {name!r}; registered needs: {sorted(_REGISTRY)}") from None


def list_needs() -> list[str]:
    return sorted(_REGISTRY)


def load_needs_yaml(path: str | Path, *, register: bool = True) -> list[Need]:
    """Read needs from a YAML list (or ``{needs: [...]}``); errors name the file and entry."""
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"needs file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    entries = doc.get("needs") if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of needs (or a mapping with key 'needs')")
    needs = []
    allowed = {"name", "title", "instruction", "base", "weights", "side_info"}
    for i, entry in enumerate(entries):
        where = f"{path}: need #{i}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(entry).__name__}")
        extra = set(entry) - allowed
        if extra:
            raise ValueError(f"{where}: unknown field(s) {sorted(extra)}; allowed: {sorted(allowed)}")
        for key in ("name", "instruction"):
            if key not in entry:
                raise ValueError(f"{where}: missing field {key!r}")
        try:
            need = Need(
                name=str(entry["name"]),
                title=str(entry.get("title", entry["name"])),
                instruction=str(entry["instruction"]),
                base=str(entry.get("base", "interest")),
                weights=dict(entry.get("weights") or {}),
                side_info=tuple(entry.get("side_info") or ("title", "category")),
            )
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        needs.append(need)
    if register:
        for need in needs:
            register_need(need)
    return needs


MAXIMIZE_INTEREST = register_need(
    Need(
        name="maximize_interest",
        title="Maximizing Interest",
        instruction=(
            "Rank the candidates by how much I will enjoy them, judging from my history: "
            "the ones I am most likely to love first."
        ),
        base="interest",
        weights={},
        side_info=("title", "category"),
    )
)
EXPLORE_NEW_TOPICS = register_need(
    Need(
        name="explore_new_topics",
        title="Explore New Topics",
        instruction=(
            "I want to explore topics I have not watched before. Rank first the candidates I would "
            "enjoy whose categories do not appear in my history; familiar topics go last."
        ),
        base="interest",
        weights={"novel_topic": 1.0},
        side_info=("title", "category"),
    )
)
TREND_PROMOTION = register_need(
    Need(
        name="trend_promotion",
        title="Trend Promotion",
        instruction=(
            "Show me what is trending that I would also like. Rank first the candidates that are "
            "popular right now (see their recent popularity) and match my taste."
        ),
        base="interest",
        weights={"popularity": 1.0},
        side_info=("title", "category", "popularity"),
    )
)
PRODUCT_SEARCH = register_need(
    Need(
        name="product_search",
        title="Product Search",
        instruction=(
            "Rank the products by how well they match my search query: exact matches first, then "
            "substitutes, then complements, irrelevant products last."
        ),
        base="esci_gain",
        weights={},
        side_info=("product_text",),
    )
)

# The needs every process has (YAML needs are added per run; `--needs all` means these + the run's own).
BUILTIN_NEEDS: tuple[str, ...] = tuple(list_needs())
