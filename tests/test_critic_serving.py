"""The live critic (``algorithm.flexrec.reward.critic_path``) served once per worker process.

* 32 threads asking for the critic at once load it once (``get_predictor`` and the reward-loop
  path ``serve_critic``); the load is slowed down so that an unlocked cache would load it many times.
* The serving form has no training pairs, predicts exactly what the full checkpoint predicts, and
  refuses the one question that needs the pairs.
* The SHA-256 describes the bytes served; a file that is not the one the run pinned stops the
  worker; ``hdfs://`` paths go through verl's own ``copy_to_local`` (its cache and file lock), and a
  stale cached copy is fetched again once.
* The reward manager loads the critic when verl constructs it and keeps serving that object.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls

import verl_flexrec.register  # noqa: F401
from verl_flexrec.critic import predictor as predictor_module
from verl_flexrec.critic.predictor import CriticPredictor, get_predictor, write_serving_file
from verl_flexrec.integration import critic_serving
from verl_flexrec.integration.critic_serving import CriticMismatch, serve_critic
from verl_flexrec.testing import build_tiny_tokenizer

THREADS = 32


@pytest.fixture(scope="module")
def critic_file(tmp_path_factory):
    from verl_flexrec.critic import CriticConfig, load_interactions, train_critic
    from verl_flexrec.critic.synthetic import make_rows, make_synthetic, write_parquet

    tmp = tmp_path_factory.mktemp("critic")
    matrix = make_synthetic(n_users=40, n_items=60, density=0.3, seed=0)
    train = write_parquet(make_rows(matrix, n_candidates=10), tmp / "train.parquet")
    critic = train_critic(load_interactions(train), CriticConfig(epochs=2, ensemble=2), progress=False)
    return critic.save(tmp / "critic.pt")


@pytest.fixture
def fresh_cache(monkeypatch):
    monkeypatch.setattr(predictor_module, "_SERVED", {})


@pytest.fixture
def counted_loads(monkeypatch):
    """Count CriticPredictor.load calls; each takes 50 ms more, so concurrent callers overlap."""
    calls = []
    original = CriticPredictor.load.__func__

    def slow_load(cls, path, *, serving=False):
        calls.append(threading.get_ident())
        time.sleep(0.05)
        return original(cls, path, serving=serving)

    monkeypatch.setattr(CriticPredictor, "load", classmethod(slow_load))
    return calls


def _at_once(fn, n=THREADS):
    barrier = threading.Barrier(n)

    def call(_):
        barrier.wait()
        return fn()

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(call, range(n)))


def test_32_concurrent_first_calls_load_once(critic_file, fresh_cache, counted_loads):
    got = _at_once(lambda: get_predictor(critic_file))
    assert len(counted_loads) == 1
    assert all(p is got[0] for p in got)
    # through the reward-loop path (verl's copy_to_local, the hash check): still the one object
    digest = hashlib.sha256(critic_file.read_bytes()).hexdigest()
    served = _at_once(lambda: serve_critic(str(critic_file), digest))
    assert len(counted_loads) == 1 and all(p is got[0] for p in served)
    assert got[0].sha256 == digest


def test_32_concurrent_reward_managers_load_once(critic_file, fresh_cache, counted_loads, tmp_path):
    tokenizer = build_tiny_tokenizer(tmp_path / "tok")
    config = OmegaConf.create({"algorithm": {"flexrec": {"reward": {"critic_path": str(critic_file)}}}})
    cls = get_reward_manager_cls("flexrec")
    managers = _at_once(lambda: cls(config=config, tokenizer=tokenizer, compute_score=None))
    assert len(counted_loads) == 1
    assert len({id(m.critic) for m in managers}) == 1


def test_serving_form_drops_training_pairs_and_predicts_the_same(critic_file, tmp_path):
    full = CriticPredictor.load(critic_file)
    serving_path = write_serving_file(critic_file, tmp_path / "critic.serving.pt")
    served = CriticPredictor.load(serving_path)
    assert len(full.seen_keys) > 0 and served.serving and len(served.seen_keys) == 0
    state = torch.load(serving_path, weights_only=True)
    assert state["format"] == "verl_flexrec.critic/2" and state["seen_pairs"].numel() == 0 and state["history"] == []
    assert serving_path.stat().st_size < critic_file.stat().st_size
    users = full.users.values[:7] * 3
    items = full.items.values[:21]
    for a, b in zip(full.predict(users, items), served.predict(users, items)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="serving form.*full checkpoint"):
        served.seen_pairs()
    # get_predictor serves the serving form of a full checkpoint too
    assert CriticPredictor.load(critic_file, serving=True).serving


def test_cli_writes_the_serving_file(critic_file, tmp_path, capsys):
    import json

    from verl_flexrec.critic.__main__ import main

    assert main(["serving", "--critic", str(critic_file), "--out", str(tmp_path / "s.pt")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bytes"] < out["source_bytes"] and out["sha256"] == hashlib.sha256((tmp_path / "s.pt").read_bytes()).hexdigest()


def test_a_changed_critic_file_is_refused(critic_file, fresh_cache, tmp_path):
    path = tmp_path / "critic.pt"
    shutil.copy(critic_file, path)
    pinned = hashlib.sha256(path.read_bytes()).hexdigest()
    assert serve_critic(str(path), pinned).sha256 == pinned
    write_serving_file(critic_file, path)  # the file is rewritten mid-run
    with pytest.raises(CriticMismatch, match=rf"{path} has SHA-256 [0-9a-f]{{64}}, but this run expects {pinned}"):
        serve_critic(str(path), pinned)


def test_relative_critic_path_is_refused(critic_file, fresh_cache, monkeypatch):
    monkeypatch.chdir(critic_file.parent)
    with pytest.raises(ValueError, match="relative.*own working directory"):
        serve_critic("critic.pt")


def test_hdfs_critic_goes_through_verls_copy_to_local(critic_file, fresh_cache, tmp_path, monkeypatch):
    """verl's copy_to_local with its hdfs copy replaced by a file copy: the node-local cache is
    filled once, reused, and fetched again when its bytes are not the pinned file's."""
    import verl.utils.fs as verl_fs

    remote = tmp_path / "remote"
    remote.mkdir()
    shutil.copy(critic_file, remote / "critic.pt")
    copies = []

    def fake_hdfs_copy(src, dst):
        copies.append(src)
        shutil.copy(remote / src.rsplit("/", 1)[-1], dst)

    monkeypatch.setattr(verl_fs, "copy", fake_hdfs_copy)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "cache"))
    uri = "hdfs://cluster/models/critic.pt"
    digest = hashlib.sha256(critic_file.read_bytes()).hexdigest()
    first = serve_critic(uri, digest)
    assert first.sha256 == digest and copies == [uri]
    local = critic_serving.local_critic_path(uri)
    assert local.startswith(str(tmp_path / "cache")) and local != uri
    assert serve_critic(uri, digest) is first and copies == [uri]  # cached on this node
    # the node's cached copy is stale (an older file): fetched again, then served
    write_serving_file(critic_file, local)
    assert serve_critic(uri, digest).sha256 == digest and copies == [uri, uri]
    # the remote file itself changed: refused, naming the node's copy
    write_serving_file(critic_file, remote / "critic.pt")
    write_serving_file(critic_file, local)
    with pytest.raises(CriticMismatch, match="this node's copy"):
        serve_critic(uri, digest)


def test_reward_manager_keeps_the_critic_it_started_with(critic_file, fresh_cache, tmp_path):
    path = tmp_path / "critic.pt"
    shutil.copy(critic_file, path)
    tokenizer = build_tiny_tokenizer(tmp_path / "tok")
    cls = get_reward_manager_cls("flexrec")
    config = OmegaConf.create({"algorithm": {"flexrec": {"reward": {"critic_path": str(path)}}}})
    manager = cls(config=config, tokenizer=tokenizer, compute_score=None)
    before = manager.critic
    write_serving_file(critic_file, path)
    assert manager.critic is before  # nothing reloads behind its back
    config.algorithm.flexrec.reward.critic_sha256 = before.sha256
    with pytest.raises(CriticMismatch):  # a worker started after the rewrite stops
        cls(config=config, tokenizer=tokenizer, compute_score=None)
    config.algorithm.flexrec.reward.critic_path = str(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        cls(config=config, tokenizer=tokenizer, compute_score=None)
