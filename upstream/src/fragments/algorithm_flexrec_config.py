@dataclass
class FlexRecConfig(BaseConfig):
    """Configuration of the ``flexrec`` advantage estimator (``algorithm.flexrec``).

    The inheritance from BaseConfig provides omegaconf.DictConfig-like interface for a dataclass config.

    Args:
        item_norm (str): How item rewards are normalised within a prompt group.
            - "position": per ranked position, across the group's rollouts (default)
            - "pooled": over all (rollout, position) pairs of the group
            - "none": centred per position, not divided by the std
        item_std_floor (float): With "position", a position's std is at least this fraction of the
            root mean square of the group's per-position stds, so positions whose rewards barely
            vary are not blown up to unit advantages (0: plain per-position std); must be >= 0.
        add_seq_adv_to_items (bool): Item tokens get the item advantage plus the sequence advantage
            (default: the item advantage alone).
        use_uncertainty (bool): Scale each rollout's advantages by the inverse variance of its reward.
        uncertainty_eps (float): eps of ``1 / (u + eps)``; must be > 0.
        uncertainty_normalize (str): Divide the scales by their mean over the "batch" (default),
            over each prompt "group", or not at all ("none").
        uncertainty_min_scale (float): Lower clip of the scale.
        uncertainty_max_scale (float): Upper clip of the scale.
        item_rewards_key (str): ``reward_extra_info`` key holding each rollout's list of item rewards,
            one per ranked position (a list or a JSON string; empty for an invalid response).
        item_token_spans_key (str): ``reward_extra_info`` key holding the ``[first, end)`` response-token
            range of each ranked item (a list of pairs or a JSON string).
        uncertainty_key (str): ``reward_extra_info`` key holding the variance ``u`` of the rollout's reward.
    """

    item_norm: str = "position"
    item_std_floor: float = 0.1
    add_seq_adv_to_items: bool = False
    use_uncertainty: bool = True
    uncertainty_eps: float = 0.01
    uncertainty_normalize: str = "batch"
    uncertainty_min_scale: float = 0.0
    uncertainty_max_scale: float = 3.0
    item_rewards_key: str = "flexrec_item_rewards"
    item_token_spans_key: str = "flexrec_item_token_spans"
    uncertainty_key: str = "flexrec_uncertainty"

    def __post_init__(self):
        if self.item_norm not in ("position", "pooled", "none"):
            raise ValueError(f"algorithm.flexrec.item_norm must be position, pooled or none, got {self.item_norm!r}")
        if not self.item_std_floor >= 0:
            raise ValueError(f"algorithm.flexrec.item_std_floor must be >= 0, got {self.item_std_floor}")
        if self.uncertainty_normalize not in ("batch", "group", "none"):
            raise ValueError(
                "algorithm.flexrec.uncertainty_normalize must be batch, group or none, "
                f"got {self.uncertainty_normalize!r}"
            )
        if self.uncertainty_eps <= 0:
            raise ValueError(f"algorithm.flexrec.uncertainty_eps must be > 0, got {self.uncertainty_eps}")
        if not 0 <= self.uncertainty_min_scale <= self.uncertainty_max_scale:
            raise ValueError(
                "algorithm.flexrec needs 0 <= uncertainty_min_scale <= uncertainty_max_scale, "
                f"got {self.uncertainty_min_scale} and {self.uncertainty_max_scale}"
            )
