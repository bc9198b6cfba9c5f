"""The resume-point check (:mod:`verl_flexrec.integration.checkpoint`) on real ``torch.save`` files.

verl 0.9.1's own ``find_latest_ckpt_path`` is the reference for what verl alone would do: it
returns ``None`` (train from scratch) for a tracker naming a missing folder, and the folder for
a truncated shard (which then fails inside ``torch.load``). The check must agree with verl on a
complete checkpoint and refuse, naming the file, where verl would go wrong.
"""

from __future__ import annotations

import pytest
import torch
from verl.utils.checkpoint.checkpoint_manager import find_latest_ckpt_path

from verl_flexrec.integration.checkpoint import CheckpointError, check_resume_point, incomplete_steps


def _save_step(folder, step, world=1):
    ckpt = folder / f"global_step_{step}"
    (ckpt / "actor").mkdir(parents=True)
    for rank in range(world):
        for kind in ("model", "optim", "extra_state"):
            torch.save({"w": torch.arange(1000.0) + rank}, ckpt / "actor" / f"{kind}_world_size_{world}_rank_{rank}.pt")
    torch.save({"epoch": 0}, ckpt / "data.pt")
    (folder / "latest_checkpointed_iteration.txt").write_text(str(step))
    return ckpt


def test_a_complete_checkpoint_is_what_verl_resumes(tmp_path):
    _save_step(tmp_path, 1)
    ckpt = _save_step(tmp_path, 2, world=2)
    assert check_resume_point(tmp_path) == ckpt
    assert find_latest_ckpt_path(str(tmp_path)) == str(ckpt)
    assert check_resume_point(tmp_path / "nothing_here") is None


def test_a_save_cut_off_before_the_tracker_is_skipped(tmp_path, capsys):
    ckpt = _save_step(tmp_path, 2)
    (tmp_path / "global_step_3" / "actor").mkdir(parents=True)
    (tmp_path / "global_step_3" / "actor" / "model_world_size_1_rank_0.pt").write_bytes(b"PK\x03\x04")
    assert check_resume_point(tmp_path) == ckpt
    assert "global_step_[3] never finished saving: skipped, resuming from global_step_2" in capsys.readouterr().out
    assert incomplete_steps(tmp_path, 2) == [3]


@pytest.mark.parametrize("damage", ["truncated_model", "empty_optim", "truncated_data", "missing_rank"])
def test_a_damaged_latest_checkpoint_is_refused_naming_the_file(tmp_path, damage):
    ckpt = _save_step(tmp_path, 4, world=2)
    actor = ckpt / "actor"
    target = {"truncated_model": actor / "model_world_size_2_rank_1.pt", "empty_optim": actor / "optim_world_size_2_rank_0.pt",
              "truncated_data": ckpt / "data.pt", "missing_rank": actor / "model_world_size_2_rank_1.pt"}[damage]
    if damage == "missing_rank":
        target.unlink()
        match = "not one complete set of ranks"
    elif damage == "empty_optim":
        target.write_bytes(b"")
        match = f"{target}: missing or empty"
    else:
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
        match = f"{target}: not a complete torch.save file"
        with pytest.raises(Exception):  # what verl would hit instead
            torch.load(target, weights_only=False)
    assert find_latest_ckpt_path(str(tmp_path)) == str(ckpt)  # verl alone would load it
    with pytest.raises(CheckpointError, match=match) as err:
        check_resume_point(tmp_path)
    assert "resume_from_path" in str(err.value)


def test_a_tracker_naming_a_missing_folder_is_refused_not_trained_from_scratch(tmp_path):
    _save_step(tmp_path, 2)
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("7")
    assert find_latest_ckpt_path(str(tmp_path)) is None  # verl: "Training from scratch"
    with pytest.raises(CheckpointError, match="global_step_7 does not exist"):
        check_resume_point(tmp_path)
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("2\x00\x00garbage")
    with pytest.raises(CheckpointError, match="not a step number"):
        check_resume_point(tmp_path)


def test_no_tracker_means_a_fresh_run_even_with_partial_folders(tmp_path, capsys):
    (tmp_path / "global_step_1" / "actor").mkdir(parents=True)
    assert check_resume_point(tmp_path) is None
    assert "global_step_[1] never finished saving: skipped, training from scratch" in capsys.readouterr().out
