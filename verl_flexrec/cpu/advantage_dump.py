"""``flexrec_sync_dump``: the ``flexrec_sync`` trainer, plus a per-token dump of every step's advantages.

Select with ``trainer.v1.trainer_mode=flexrec_sync_dump`` and set ``trainer.rollout_data_dir``.
After verl (and FlexRec's seam) computed the advantages of a training batch, it writes
``<rollout_data_dir>/advantages/<step>.jsonl``, one line per rollout::

    {"key": ..., "valid": 0/1, "item_token_spans": [[first, end), ...], "advantages": [a_0, a_1, ...]}

``advantages`` covers the response tokens (``response_mask`` ones, in order) and
``item_token_spans`` are the ``flexrec`` reward manager's response-token ranges of each ranked
id. That is where one sees that item tokens carry item-level credit (the end-to-end CPU test
asserts it). It also logs ``flexrec_dump/item_token_adv_abs/mean`` and
``flexrec_dump/other_token_adv_abs/mean`` so the same signal shows in the trackers.

The class is built and registered right after ``verl_flexrec.integration.trainer`` (the
``flexrec_sync`` trainer) is loaded, through the post-import hook FlexRec's entry point already
uses, so ``import verl`` stays cheap and every process that can see ``flexrec_sync`` sees this too.
"""

from __future__ import annotations

import json
import os

from ..atomic import write_text_atomic

DUMP_TRAINER_MODE = "flexrec_sync_dump"
FLEXREC_TRAINER_MODULE = "verl_flexrec.integration.trainer"


def _rows(value) -> list:
    if getattr(value, "is_nested", False):
        return [t.tolist() for t in value.unbind(0)]
    return value.tolist() if hasattr(value, "tolist") else list(value)


def dump_rows(keys, advantages, response_mask, extra_fields) -> list[dict]:
    """One JSON-ready dict per rollout: response-token advantages and the item-token spans."""
    from verl_flexrec.integration.item_data import ITEM_TOKENS_KEY, item_token_spans  # numpy: only when dumping

    rows = []
    for key, adv, mask, fields in zip(keys, advantages, response_mask, extra_fields, strict=True):
        info = (fields or {}).get("reward_extra_info") or {} if isinstance(fields, dict) else {}
        spans = item_token_spans(info) if ITEM_TOKENS_KEY in info else []
        n = len(mask)
        resp_adv = [float(a) for a, m in zip(adv[:n], mask) if m]
        rows.append({
            "key": str(key),
            "valid": float(info.get("flexrec_valid", 0.0)),
            "item_token_spans": spans,
            "advantages": resp_adv,
        })
    return rows


def split_by_item_tokens(row: dict) -> tuple[list[float], list[float]]:
    """(advantages on item tokens, advantages on the other response tokens) of one dumped row."""
    inside = set()
    for first, end in row["item_token_spans"]:
        inside.update(range(int(first), int(end)))
    adv = row["advantages"]
    return [adv[i] for i in sorted(inside) if i < len(adv)], [a for i, a in enumerate(adv) if i not in inside]


def dump_metrics(rows: list[dict]) -> dict[str, float]:
    """Mean |advantage| on item tokens and on the other response tokens, over the batch."""
    item, other = [], []
    for row in rows:
        a, b = split_by_item_tokens(row)
        item += [abs(x) for x in a]
        other += [abs(x) for x in b]
    return {
        "flexrec_dump/item_token_adv_abs/mean": sum(item) / len(item) if item else 0.0,
        "flexrec_dump/other_token_adv_abs/mean": sum(other) / len(other) if other else 0.0,
    }


def build_dump_trainer():
    """Subclass of FlexRec's ``flexrec_sync`` trainer that dumps advantages (see module docstring)."""
    import transfer_queue as tq

    from verl_flexrec.integration.trainer import FlexRecTrainerSync

    class FlexRecTrainerSyncDump(FlexRecTrainerSync):
        def _compute_advantage(self, batch, metrics: dict):
            batch = super()._compute_advantage(batch, metrics)
            data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                                   select_fields=["advantages", "response_mask", "extra_fields"])
            extra = _rows(data["extra_fields"]) if "extra_fields" in data.keys() else [None] * len(batch.keys)  # noqa: SIM118 - TensorDict
            rows = dump_rows(batch.keys, _rows(data["advantages"]), _rows(data["response_mask"]), extra)
            metrics.update(dump_metrics(rows))
            out_dir = self.config.trainer.get("rollout_data_dir")
            if out_dir:
                path = os.path.join(out_dir, "advantages")
                os.makedirs(path, exist_ok=True)
                write_text_atomic(os.path.join(path, f"{self.global_steps}.jsonl"),
                                  "".join(json.dumps(row) + "\n" for row in rows))
            return batch

    return FlexRecTrainerSyncDump


def register_dump_trainer(_v1_package=None) -> None:
    """Register ``flexrec_sync_dump`` in verl's V1 trainer registry (once)."""
    from verl.trainer.ppo.v1.trainer_base import get_trainer_cls, register_trainer

    try:
        get_trainer_cls(DUMP_TRAINER_MODE)
        return
    except (ValueError, KeyError):
        pass
    register_trainer(DUMP_TRAINER_MODE)(build_dump_trainer())
