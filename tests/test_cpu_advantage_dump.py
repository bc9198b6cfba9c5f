"""verl_flexrec.cpu.advantage_dump: rows, item/other token split and the logged means."""

import pytest

from verl_flexrec.cpu.advantage_dump import (
    dump_metrics,
    dump_rows,
    split_by_item_tokens,
)
from verl_flexrec.integration.item_data import encode_item_data


def test_dump_rows_keep_response_tokens_and_spans():
    rows = dump_rows(
        keys=["a_0_0", "b_0_0"],
        advantages=[[0.5, 0.2, -0.1, 9.0], [1.0, 1.0, 7.0]],
        response_mask=[[1, 1, 1, 0], [1, 1, 0]],
        extra_fields=[{"reward_extra_info": {"flexrec_valid": 1.0, **encode_item_data([0.3], [(1, 2)])}},
                      None],
    )
    assert rows[0] == {"key": "a_0_0", "valid": 1.0, "item_token_spans": [[1, 2]], "advantages": [0.5, 0.2, -0.1]}
    assert rows[1] == {"key": "b_0_0", "valid": 0.0, "item_token_spans": [], "advantages": [1.0, 1.0]}


def test_split_and_metrics_against_a_hand_count():
    row = {"item_token_spans": [[0, 2], [3, 4]], "advantages": [1.0, -2.0, 0.5, 4.0, 0.0]}
    assert split_by_item_tokens(row) == ([1.0, -2.0, 4.0], [0.5, 0.0])
    m = dump_metrics([row, {"item_token_spans": [], "advantages": [-1.5]}])
    assert m["flexrec_dump/item_token_adv_abs/mean"] == pytest.approx((1 + 2 + 4) / 3)
    assert m["flexrec_dump/other_token_adv_abs/mean"] == pytest.approx((0.5 + 0 + 1.5) / 3)
    assert dump_metrics([]) == {"flexrec_dump/item_token_adv_abs/mean": 0.0, "flexrec_dump/other_token_adv_abs/mean": 0.0}
