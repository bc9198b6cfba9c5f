import pytest
import torch

from verl_flexrec.threads import torch_threads


def test_sets_and_restores_torch_threads():
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    with torch_threads(want):
        assert torch.get_num_threads() == want
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(want):  # restored on error too
        raise RuntimeError
    assert torch.get_num_threads() == before


def test_none_leaves_torch_alone_and_zero_is_refused():
    before = torch.get_num_threads()
    with torch_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match=">= 1"), torch_threads(0):
        pass
    assert torch.get_num_threads() == before
