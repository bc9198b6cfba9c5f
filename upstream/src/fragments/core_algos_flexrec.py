def _flexrec_config(config: Optional[AlgoConfig]) -> FlexRecConfig:
    """``algorithm.flexrec`` as a FlexRecConfig (defaults when absent)."""
    node = config.get("flexrec", None) if config is not None else None
    if node is None:
        return FlexRecConfig()
    if isinstance(node, FlexRecConfig):
        return node
    try:
        return omega_conf_to_dataclass(node, FlexRecConfig)
    except Exception as e:  # omegaconf names the unknown key; add where the keys come from
        raise ValueError(
            f"invalid algorithm.flexrec ({e}); see FlexRecConfig in verl/trainer/config/algorithm.py"
        ) from e


def _flexrec_group_ids(index: np.ndarray) -> torch.Tensor:
    """Dense group id (0..G-1) per rollout; rollouts with equal ``str(index)`` share a group."""
    _, inverse = np.unique(np.asarray(index, dtype=object).astype(str), return_inverse=True)
    return torch.as_tensor(inverse.reshape(-1), dtype=torch.long)


def _flexrec_group_mean_std(values: torch.Tensor, valid: torch.Tensor, cell: torch.Tensor, num_cells: int):
    """Mean and unbiased std of ``values[valid]`` per cell id, in float64.

    As in GRPO, a cell with fewer than two values gets mean 0 and std 1.
    """
    v = torch.where(valid, values, torch.zeros_like(values)).to(torch.float64).reshape(-1)
    w = valid.to(torch.float64).reshape(-1)
    c = cell.reshape(-1)
    n = torch.zeros(num_cells, dtype=torch.float64, device=v.device).index_add_(0, c, w)
    s = torch.zeros(num_cells, dtype=torch.float64, device=v.device).index_add_(0, c, v)
    mean = s / n.clamp(min=1)
    dev = torch.where(w > 0, v - mean[c], torch.zeros_like(v))
    ss = torch.zeros(num_cells, dtype=torch.float64, device=v.device).index_add_(0, c, dev * dev)
    std = torch.sqrt(ss / (n - 1).clamp(min=1))
    few = n < 2
    return torch.where(few, torch.zeros_like(mean), mean), torch.where(few, torch.ones_like(std), std)


def _flexrec_uncertainty_scale(
    uncertainty: torch.Tensor, gid: torch.Tensor, has_response: torch.Tensor, cfg: FlexRecConfig
) -> torch.Tensor:
    """``clip(normalize(1 / (u + eps)))`` per rollout, float64.

    Non-finite or negative ``u`` counts as 0. The "batch" mean is taken over rollouts with at least
    one response token, so verl's padding rows (empty response_mask) do not shift it.
    """
    u = torch.as_tensor(uncertainty, device=has_response.device).to(torch.float64).reshape(-1)
    u = torch.where(torch.isfinite(u) & (u > 0), u, torch.zeros_like(u))
    c = 1.0 / (u + cfg.uncertainty_eps)
    if cfg.uncertainty_normalize == "batch" and has_response.any():
        c = c / c[has_response].mean()
    elif cfg.uncertainty_normalize == "group":
        sums = torch.zeros(int(gid.max()) + 1, dtype=torch.float64, device=c.device).index_add_(0, gid, c)
        counts = torch.bincount(gid, minlength=sums.numel()).to(torch.float64)
        c = c / (sums / counts)[gid]
    return c.clamp(min=cfg.uncertainty_min_scale, max=cfg.uncertainty_max_scale)


def _flexrec_item_advantages(
    item_rewards: torch.Tensor, gid: torch.Tensor, cfg: FlexRecConfig, epsilon: float, norm_by_std: bool
) -> torch.Tensor:
    """A^item ``(bs, K)`` in float64, NaN where ``item_rewards`` is NaN (no reward at that position)."""
    bs, K = item_rewards.shape
    have = torch.isfinite(item_rewards)
    num_groups = int(gid.max()) + 1
    if cfg.item_norm == "pooled":
        cell, num_cells = gid[:, None].expand(bs, K), num_groups
    else:
        cell, num_cells = gid[:, None] * K + torch.arange(K, device=gid.device)[None, :], num_groups * K
    mean, std = _flexrec_group_mean_std(item_rewards, have, cell, num_cells)
    centred = item_rewards - mean[cell]
    if cfg.item_norm == "none" or not norm_by_std:
        item_adv = centred
    else:
        if cfg.item_norm == "position" and cfg.item_std_floor > 0 and K > 0:
            # floor each position's std at item_std_floor x the RMS of its group's per-position stds
            # (cells with at least two values), so near-constant positions are not blown up
            n = torch.zeros(num_cells, dtype=torch.float64, device=std.device)
            n = n.index_add_(0, cell.reshape(-1), have.to(torch.float64).reshape(-1))
            counted = n >= 2
            w = counted.to(torch.float64).view(-1, K)
            sigma = ((std.view(-1, K) ** 2 * w).sum(1) / w.sum(1).clamp(min=1)).sqrt().repeat_interleave(K)
            std = torch.where(counted, torch.maximum(std, cfg.item_std_floor * sigma), std)
        item_adv = centred / (std[cell] + epsilon)
    return torch.where(have, item_adv, torch.full_like(item_adv, float("nan")))


def _flexrec_json_list(value: Any, what: str, row: int) -> list:
    """A reward_extra_info list value: a sequence, a JSON string (what reward managers log), or None."""
    if value is None:
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"flexrec: row {row}: {what} is not valid JSON ({e}): {value[:80]!r}") from e
    return list(value)


def flexrec_inputs_from_non_tensor_batch(
    non_tensor_batch: dict, response_length: int, config: Optional[FlexRecConfig] = None
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """FlexRec's per-rollout inputs from the reward function's ``reward_extra_info`` columns.

    Returns ``item_rewards`` ``(bs, K)`` float32 (NaN past a rollout's list, K = longest list),
    ``item_token_pos`` ``(bs, response_length)`` long (ranked position k on the tokens of item k, -1
    elsewhere; spans are clipped to the response, a later span wins where two overlap) and
    ``uncertainty`` ``(bs,)`` float32 (None when the column is absent; 0 where a row has no value).
    """
    cfg = config or FlexRecConfig()
    if cfg.item_rewards_key not in non_tensor_batch or cfg.item_token_spans_key not in non_tensor_batch:
        missing = [k for k in (cfg.item_rewards_key, cfg.item_token_spans_key) if k not in non_tensor_batch]
        raise ValueError(
            f"adv_estimator=flexrec needs {missing} in each rollout's reward_extra_info (got columns "
            f"{sorted(non_tensor_batch)}); return them from the reward function/manager or set "
            "algorithm.flexrec.item_rewards_key / item_token_spans_key"
        )
    rewards_column = non_tensor_batch[cfg.item_rewards_key]
    spans_column = non_tensor_batch[cfg.item_token_spans_key]
    bs = len(rewards_column)
    rewards = [_flexrec_json_list(v, cfg.item_rewards_key, i) for i, v in enumerate(rewards_column)]
    k_max = max((len(r) for r in rewards), default=0)
    item_rewards = np.full((bs, k_max), np.nan, dtype=np.float32)
    item_token_pos = np.full((bs, response_length), -1, dtype=np.int64)
    for i, (row_rewards, row_spans) in enumerate(zip(rewards, spans_column, strict=True)):
        item_rewards[i, : len(row_rewards)] = [float(r) for r in row_rewards]
        for k, span in enumerate(_flexrec_json_list(row_spans, cfg.item_token_spans_key, i)):
            if len(span) != 2:
                raise ValueError(
                    f"flexrec: row {i}: {cfg.item_token_spans_key} must hold [first, end) pairs, got {span!r}"
                )
            first, end = span
            item_token_pos[i, max(first, 0) : min(end, response_length)] = k
    uncertainty = None
    if cfg.uncertainty_key in non_tensor_batch:
        values = non_tensor_batch[cfg.uncertainty_key]
        uncertainty = torch.tensor([0.0 if v is None else float(v) for v in values], dtype=torch.float32)
    return torch.from_numpy(item_rewards), torch.from_numpy(item_token_pos), uncertainty


@register_adv_est(AdvantageEstimator.FLEXREC)  # or simply: @register_adv_est("flexrec")
def compute_flexrec_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray,
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool = True,
    config: Optional[AlgoConfig] = None,
    item_rewards: Optional[torch.Tensor] = None,
    item_token_pos: Optional[torch.Tensor] = None,
    uncertainty: Optional[torch.Tensor] = None,
    non_tensor_batch: Optional[dict] = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    FlexRec: GRPO with item-level advantages for ranking responses, scaled by reward uncertainty.

    A response ranks K items. Besides the outcome reward R_i (``token_level_rewards.sum(-1)``), the
    reward function gives one reward r_{i,k} per ranked position k (FlexRec's counterfactual swap
    reward) and, when some item gains were predicted rather than observed, the variance u_i of R_i.
    For rollout i of prompt group G (rollouts sharing ``index``) and response token t:

        A^seq_i    = (R_i - mean_G R) / (std_G R + epsilon)                                 (GRPO)
        A^item_i,k = (r_i,k - mean_{i' in G} r_i',k) / (s_G,k + epsilon)                   (item_norm="position")
        s_G,k      = max(std_{i' in G} r_i',k, item_std_floor * sqrt(mean_k' std_{i' in G} r_i',k'^2))
        A_i,t      = c_i * (A^item_i,k  if token t spells the item ranked at k, else A^seq_i)
        c_i        = clip(normalize(1 / (u_i + uncertainty_eps)), min_scale, max_scale)

    The floor keeps positions whose rewards barely vary (the tail of a full-list NDCG) from being
    blown up to unit advantages; ``item_std_floor=0`` gives plain per-position normalisation.
    Statistics follow GRPO: unbiased std, mean 0 and std 1 for fewer than two values (such cells
    and positions are left out of the floor), and
    ``norm_adv_by_std_in_grpo=False`` only centres (Dr.GRPO). Rollouts without item rewards (an
    invalid response) are left out of the item statistics and keep A^seq_i on every token.
    ``item_norm="pooled"`` pools all (rollout, position) pairs of a group, ``"none"`` only centres
    per position; ``add_seq_adv_to_items`` gives item tokens A^item + A^seq. ``normalize`` divides
    c by its mean over the batch (rollouts with response tokens) or the prompt group, so a fully
    observed batch (u = 0) gets c = 1. Without item data and uncertainty this is
    ``compute_grpo_outcome_advantage``, exactly.

    Args:
        token_level_rewards: `(torch.Tensor)`
            shape is (bs, response_length)
        response_mask: `(torch.Tensor)`
            shape is (bs, response_length)
        index: `(np.ndarray)`
            prompt group id of each rollout (``uid``)
        epsilon: `(float)`
            small value to avoid division by zero
        norm_adv_by_std_in_grpo: `(bool)`
            divide by the group std (overridden by ``config.norm_adv_by_std_in_grpo``)
        config: `(Optional[AlgoConfig])`
            algorithm config; ``config.flexrec`` holds the FlexRecConfig options
        item_rewards: `(Optional[torch.Tensor])`
            shape (bs, K), reward of the item at each ranked position, NaN where absent
        item_token_pos: `(Optional[torch.Tensor])`
            shape (bs, response_length), ranked position of the item a token spells, -1 elsewhere
        uncertainty: `(Optional[torch.Tensor])`
            shape (bs,), variance u_i of each rollout's reward (None: no scaling)
        non_tensor_batch: `(Optional[dict])`
            per-rollout reward_extra_info columns, read when the three tensors above are not given

    Note:
        FlexRec: https://arxiv.org/abs/2603.11901

    Returns:
        advantages: `(torch.Tensor)`
            shape is (bs, response_length)
        Returns: `(torch.Tensor)`
            shape is (bs, response_length)
    """
    cfg = _flexrec_config(config)
    if config is not None:
        norm_adv_by_std_in_grpo = config.get("norm_adv_by_std_in_grpo", norm_adv_by_std_in_grpo)
    bs, response_length = response_mask.shape
    if bs == 0:
        advantages = torch.zeros_like(token_level_rewards)
        return advantages, advantages
    if item_rewards is None and item_token_pos is None and uncertainty is None and non_tensor_batch is not None:
        item_rewards, item_token_pos, uncertainty = flexrec_inputs_from_non_tensor_batch(
            non_tensor_batch, response_length, cfg
        )
    if item_rewards is None and item_token_pos is None and uncertainty is None:
        return compute_grpo_outcome_advantage(
            token_level_rewards=token_level_rewards,
            response_mask=response_mask,
            index=index,
            epsilon=epsilon,
            norm_adv_by_std_in_grpo=norm_adv_by_std_in_grpo,
        )

    with torch.no_grad():
        gid = _flexrec_group_ids(index).to(response_mask.device)
        if gid.numel() != bs:
            raise ValueError(f"flexrec: index has {gid.numel()} entries for {bs} rollouts")
        scores = token_level_rewards.sum(dim=-1).to(torch.float64)
        mean, std = _flexrec_group_mean_std(scores, torch.ones_like(scores, dtype=torch.bool), gid, int(gid.max()) + 1)
        seq_adv = scores - mean[gid]
        if norm_adv_by_std_in_grpo:
            seq_adv = seq_adv / (std[gid] + epsilon)

        scale = torch.ones(bs, dtype=torch.float64, device=seq_adv.device)
        if cfg.use_uncertainty and uncertainty is not None:
            scale = _flexrec_uncertainty_scale(uncertainty, gid, response_mask.any(-1), cfg)

        if item_rewards is None or item_token_pos is None:
            advantages = (seq_adv * scale).to(torch.float32)[:, None].expand(bs, response_length)
        else:
            item_token_pos = torch.as_tensor(item_token_pos, dtype=torch.long, device=seq_adv.device)
            if item_token_pos.shape != response_mask.shape:
                raise ValueError(
                    f"flexrec: item_token_pos has shape {tuple(item_token_pos.shape)}, "
                    f"response_mask {tuple(response_mask.shape)}"
                )
            item_rewards = torch.as_tensor(item_rewards, dtype=torch.float64, device=seq_adv.device)
            item_adv = _flexrec_item_advantages(item_rewards, gid, cfg, epsilon, norm_adv_by_std_in_grpo)
            # value of a token by what it spells: column 0 = not an item token, 1 + k = item k, K + 1 = past the list
            seq = seq_adv[:, None]
            items = item_adv + seq if cfg.add_seq_adv_to_items else item_adv
            items = torch.where(torch.isfinite(item_adv), items, seq.expand_as(items))
            table = torch.cat([seq, items, seq], dim=1) * scale[:, None]
            column = (item_token_pos + 1).clamp(0, item_adv.shape[1] + 1)
            advantages = torch.gather(table.to(torch.float32), 1, column)
        advantages = (advantages * response_mask.to(torch.float32)).to(token_level_rewards.dtype)
    return advantages, advantages
