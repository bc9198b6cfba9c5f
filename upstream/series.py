"""Build the FlexRec patch series for verl from ``upstream/src`` (how-to: docs/upstreaming.md).

Each patch is a list of edits to the pristine verl sources, applied and committed in order:
``Add`` copies a whole new file from ``src/new/<verl path>``; ``Replace`` swaps one exact snippet
of a verl file (it must occur exactly once, so a rebase onto a verl whose code moved fails loudly
instead of patching the wrong place); a replacement may splice in a file from ``src/fragments``.

    python upstream/series.py regenerate [--version 0.9.1]   # rewrite upstream/patches/ from src/
    python upstream/series.py pristine --version V --dest DIR  # verl V's sdist as a one-commit git repo
    python upstream/series.py am --repo DIR                    # git am upstream/patches/*.patch
    python upstream/series.py verify --repo DIR                # patches == what src/ builds

Commits are made with a fixed author, committer and date and without any user git config, so the
same sources give the same commits on every machine.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
PATCHES = HERE / "patches"

# the verl release the committed patches are built against, and the sdists we have checked
VERL_VERSION = "0.9.1"
SDIST_SHA256 = {"0.9.1": "3e03d8816b2546b2c5580705671b8d0bb3f79b8364e7b5c56dbfc1245536ba22"}
CACHE = Path(os.environ.get("VERL_SDIST_CACHE", Path.home() / ".cache" / "verl-flexrec" / "sdists"))

AUTHOR = ("verl-flexrec", "verl-flexrec@users.noreply.github.com")
DATE = "2026-01-01T00:00:00+00:00"
PRISTINE_TAG = "pristine"


# ----------------------------------------------------------------------------- edits
@dataclass
class Add:
    path: str  # verl path; the file is src/new/<path>

    def apply(self, tree: Path) -> None:
        target = tree / self.path
        if target.exists():
            raise SystemExit(f"Add {self.path}: the file already exists in this verl")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SRC / "new" / self.path, target)  # 100644, as verl keeps its example scripts


@dataclass
class Replace:
    path: str
    old: str
    new: str = ""
    fragment: str | None = None  # src/fragments/<name>, spliced in where "{fragment}" stands in `new`

    def apply(self, tree: Path) -> None:
        target = tree / self.path
        text = target.read_text()
        count = text.count(self.old)
        if count != 1:
            raise SystemExit(
                f"Replace in {self.path}: the snippet occurs {count} times (need exactly 1); verl's code "
                f"moved, update upstream/series.py:\n{self.old}"
            )
        new = self.new
        if self.fragment is not None:
            # a fragment is top-level code: two blank lines before what follows it (PEP 8)
            new = new.replace("{fragment}", (SRC / "fragments" / self.fragment).read_text().rstrip() + "\n\n\n")
        target.write_text(text.replace(self.old, new))


@dataclass
class Patch:
    subject: str
    body: str
    edits: list


RAY_TRAINER = "verl/trainer/ppo/ray_trainer.py"
V1_UTILS = "verl/trainer/ppo/v1/utils.py"
TRAINER_BASE = "verl/trainer/ppo/v1/trainer_base.py"
CORE_ALGOS = "verl/trainer/ppo/core_algos.py"
ALGORITHM = "verl/trainer/config/algorithm.py"

SERIES = [
    Patch(
        "[trainer] feat: pass non_tensor_batch to every advantage estimator that accepts it",
        """\
compute_advantage() hands a registered estimator the reward tensors, the
response mask, the uid index and the algorithm config. Per-rollout data
that is not a tensor (the reward function's reward_extra_info, task ids,
validity flags) lives in DataProto.non_tensor_batch; only GDPO receives it,
through a case that names GDPO in ray_trainer.py.

Pass non_tensor_batch and batch to any estimator whose signature accepts
them (a declared parameter or **kwargs). GDPO is served by the general rule,
so its special case goes. Existing estimators are unaffected: all but
grpo_vectorized already take **kwargs and ignore what they do not use, and
grpo_vectorized (fixed signature) receives exactly what it did before. GAE
and GRPO keep their inline branches.

The same change is proposed in verl PR #7473; if that lands first, this
patch reduces to its test.
""",
        [
            Replace(RAY_TRAINER, "import json\nimport os\nimport uuid\n", "import inspect\nimport json\nimport os\nimport uuid\n"),
            Replace(
                RAY_TRAINER,
                "from typing import Any, Optional\n\nimport numpy as np\nimport torch\nfrom omegaconf import OmegaConf, open_dict",
                "from typing import Any, Callable, Optional\n\nimport numpy as np\nimport torch\nfrom omegaconf import OmegaConf, open_dict",
            ),
            Replace(
                RAY_TRAINER,
                "def compute_advantage(\n    data: DataProto,\n",
                '''def accepts_kwarg(fn: Callable, name: str) -> bool:
    """Whether ``fn`` can be called with the keyword argument ``name`` (declared, or a ``**kwargs``)."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def compute_advantage(
    data: DataProto,
''',
            ),
            Replace(
                RAY_TRAINER,
                """        # GDPO: pass raw data for per-dimension reward extraction
        if adv_estimator in (AdvantageEstimator.GDPO, "gdpo"):
            adv_kwargs["non_tensor_batch"] = data.non_tensor_batch
            adv_kwargs["batch"] = data.batch
""",
                """        # Per-rollout data beyond the tensors above (reward_extra_info columns, ids, ...), for every
        # estimator that can take it (GDPO reads its reward components here).
        for key, value in (("non_tensor_batch", data.non_tensor_batch), ("batch", data.batch)):
            if accepts_kwarg(adv_estimator_fn, key):
                adv_kwargs[key] = value
""",
            ),
            Add("tests/trainer/ppo/test_adv_estimator_kwargs_on_cpu.py"),
        ],
    ),
    Patch(
        "[trainer] feat: V1 trainer hands each rollout's reward_extra_info to the advantage estimator",
        """\
In the V1 trainer, the reward loop stores each rollout's reward_extra_info
in TransferQueue (extra_fields["reward_extra_info"]), but
PPOTrainer._compute_advantage fetches only tensor fields and builds a
DataProto whose non_tensor_batch holds just the uid. An estimator that needs
per-rollout data from the reward function therefore cannot run on the V1
trainer without a trainer subclass that fetches it separately. (GDPO's
component rewards do not reach it either; GDPO also reads batch["prompts"]
and "attention_mask", which the V1 trainer does not fetch - not changed here.)

When the configured estimator accepts non_tensor_batch, _compute_advantage
now also fetches extra_fields and adds one object column per
reward_extra_info key (None where a rollout lacks the key), the layout the
legacy trainer already gives non_tensor_batch. uid is never overwritten.
For GAE, GRPO and fixed-signature estimators nothing is fetched and
nothing changes. The method is shared by the sync and both async trainers.
""",
        [
            Replace(
                V1_UTILS,
                "from verl.trainer.ppo.ray_trainer import compute_advantage\n",
                "from verl.trainer.ppo.ray_trainer import accepts_kwarg, compute_advantage\n",
            ),
            Replace(
                V1_UTILS,
                "def compute_advantage_for_multi_trajectories(\n",
                '''def estimator_reads_non_tensor_batch(adv_estimator) -> bool:
    """Whether ``compute_advantage`` hands ``non_tensor_batch`` to this estimator (GAE and GRPO run inline)."""
    if adv_estimator in (core_algos.AdvantageEstimator.GAE, core_algos.AdvantageEstimator.GRPO):
        return False
    return accepts_kwarg(core_algos.get_adv_estimator_fn(adv_estimator), "non_tensor_batch")


def reward_extra_info_columns(extra_fields: list, reserved=()) -> dict[str, np.ndarray]:
    """``non_tensor_batch`` columns from each rollout's ``extra_fields["reward_extra_info"]``.

    One 1-D object array per key, in row order, with None where a rollout lacks the key (the layout
    of the legacy trainer). Keys in ``reserved`` (columns already present, such as ``uid``) are skipped.
    """
    infos = []
    for fields in extra_fields:
        fields = getattr(fields, "data", fields)
        info = fields.get("reward_extra_info") if isinstance(fields, dict) else None
        infos.append(info if isinstance(info, dict) else {})
    columns = {}
    for key in dict.fromkeys(k for info in infos for k in info):
        if key in reserved:
            continue
        column = np.empty(len(infos), dtype=object)  # element-wise: equal-length lists must not become 2-D
        for i, info in enumerate(infos):
            column[i] = info.get(key)
        columns[key] = column
    return columns


def compute_advantage_for_multi_trajectories(
''',
            ),
            Replace(
                TRAINER_BASE,
                "from verl.trainer.ppo.v1.utils import MetricsAggregator, compute_advantage_for_multi_trajectories\n",
                """from verl.trainer.ppo.v1.utils import (
    MetricsAggregator,
    compute_advantage_for_multi_trajectories,
    estimator_reads_non_tensor_batch,
    reward_extra_info_columns,
)
""",
            ),
            Replace(
                TRAINER_BASE,
                """        fields = ["uid", "response_mask", "rm_scores", "rollout_log_probs", "old_log_probs", "ref_log_prob", "values"]
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)

        response_mask = data["response_mask"]
        data = DataProto(batch=data.to_padded_tensor())
        data.batch["token_level_scores"] = data.batch["rm_scores"]
        data.non_tensor_batch["uid"] = np.array(data.batch.pop("uid").tolist(), dtype=object)
""",
                """        fields = ["uid", "response_mask", "rm_scores", "rollout_log_probs", "old_log_probs", "ref_log_prob", "values"]
        # estimators that take non_tensor_batch also get each rollout's reward_extra_info
        pass_reward_extra_info = estimator_reads_non_tensor_batch(self.config.algorithm.adv_estimator)
        if pass_reward_extra_info:
            fields.append("extra_fields")
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        # TransferQueue leaves out a field that no rollout stored
        extra_fields = data.pop("extra_fields").tolist() if "extra_fields" in data.keys() else [None] * len(batch)

        response_mask = data["response_mask"]
        data = DataProto(batch=data.to_padded_tensor())
        data.batch["token_level_scores"] = data.batch["rm_scores"]
        data.non_tensor_batch["uid"] = np.array(data.batch.pop("uid").tolist(), dtype=object)
        if pass_reward_extra_info:
            data.non_tensor_batch.update(reward_extra_info_columns(extra_fields, reserved=data.non_tensor_batch))
""",
            ),
            Add("tests/trainer/ppo/v1/test_compute_advantage_extra_info_on_cpu.py"),
        ],
    ),
    Patch(
        "[algo] feat: add FlexRec advantage estimator",
        """\
FlexRec (https://arxiv.org/abs/2603.11901) post-trains an LLM recommender
that writes a ranking of K candidate items. Its reward function scores every
ranked position (a counterfactual swap reward) besides the list as a whole,
and reports the variance of the reward when some item gains were predicted
by a critic rather than observed.

compute_flexrec_outcome_advantage (registered as "flexrec") gives the
tokens that spell the item ranked at position k that item's group-normalised
reward, every other token the GRPO advantage of the sequence reward, and
scales each rollout by the inverse variance of its reward (normalised and
clipped). The formula is in the docstring. With no item data and no
uncertainty it returns compute_grpo_outcome_advantage's result exactly.

Inputs arrive as keyword tensors (item_rewards, item_token_pos,
uncertainty) or, through the trainer, as reward_extra_info columns in
non_tensor_batch (three keys, configurable). Options live in
algorithm.flexrec (FlexRecConfig): item normalisation, whether item tokens
also get the sequence advantage, and the uncertainty scale's eps,
normalisation and clip range.
""",
        [
            Replace(CORE_ALGOS, '    GDPO = "gdpo"\n', '    GDPO = "gdpo"\n    FLEXREC = "flexrec"\n'),
            Replace(
                CORE_ALGOS,
                "from collections import defaultdict\nfrom enum import Enum\n",
                "import json\nfrom collections import defaultdict\nfrom enum import Enum\n",
            ),
            Replace(
                CORE_ALGOS,
                "from verl.trainer.config import AlgoConfig\nfrom verl.utils import as_torch_index, group_mean_std\n",
                "from verl.trainer.config import AlgoConfig, FlexRecConfig\nfrom verl.utils import as_torch_index, group_mean_std\n"
                "from verl.utils.config import omega_conf_to_dataclass\n",
            ),
            Replace(
                CORE_ALGOS,
                "@register_adv_est(AdvantageEstimator.GRPO_PASSK)",
                "{fragment}@register_adv_est(AdvantageEstimator.GRPO_PASSK)",
                fragment="core_algos_flexrec.py",
            ),
            Replace(
                ALGORITHM,
                '__all__ = ["AlgoConfig", "FilterGroupsConfig", "KLControlConfig", "RolloutCorrectionConfig"]',
                '__all__ = ["AlgoConfig", "FilterGroupsConfig", "FlexRecConfig", "KLControlConfig", "RolloutCorrectionConfig"]',
            ),
            Replace(
                ALGORITHM,
                "@dataclass\nclass AlgoConfig(BaseConfig):\n",
                "{fragment}@dataclass\nclass AlgoConfig(BaseConfig):\n",
                fragment="algorithm_flexrec_config.py",
            ),
            Replace(
                ALGORITHM,
                "            For backward compatibility, you can still pass a dict, which will be converted to\n"
                "            RolloutCorrectionConfig automatically.\n",
                "            For backward compatibility, you can still pass a dict, which will be converted to\n"
                "            RolloutCorrectionConfig automatically.\n"
                "        flexrec (Optional[FlexRecConfig]): Options of the ``flexrec`` advantage estimator.\n",
            ),
            Replace(
                ALGORITHM,
                "    gdpo_reward_weights: Optional[list[float]] = None\n",
                "    gdpo_reward_weights: Optional[list[float]] = None\n"
                "    # FlexRec advantage estimator settings (adv_estimator=flexrec); None = FlexRecConfig defaults.\n"
                "    flexrec: Optional[FlexRecConfig] = None\n",
            ),
        ],
    ),
    Patch(
        "[algo] test: FlexRec advantage estimator",
        """\
CPU tests of the flexrec estimator against independent references: GRPO
(bitwise equality when no item data is given), hand-computed small cases
for each item normalisation, invalid rollouts, single-rollout groups,
token-to-item mapping with ragged lists and overlapping spans, the
uncertainty scale (batch/group/none normalisation, clipping, padding rows),
the reward_extra_info path through compute_advantage (JSON strings and
lists), config validation, and no NaN/inf from degenerate groups.
""",
        [Add("tests/trainer/ppo/test_flexrec_advantage_on_cpu.py")],
    ),
    Patch(
        "[doc] feat: FlexRec algorithm page and example script",
        """\
docs/algo/flexrec.md states the estimator's formula, its configuration,
the reward_extra_info contract a reward manager must fulfil, and how the
V1 trainer carries that data to the estimator. The example trains
Qwen2.5-3B-Instruct with FSDP and vLLM on a FlexRec ranking dataset.

Add algo/flexrec.md to the "Algorithms" toctree in docs/index.rst (not
part of this patch: the PyPI sdist this series is tested against ships
without docs/).
""",
        [
            Add("docs/algo/flexrec.md"),
            Add("examples/flexrec_trainer/README.md"),
            Add("examples/flexrec_trainer/run_qwen2_5_3b_fsdp.sh"),
        ],
    ),
]


# ----------------------------------------------------------------------------- git
def _git_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME=AUTHOR[0],
        GIT_AUTHOR_EMAIL=AUTHOR[1],
        GIT_AUTHOR_DATE=DATE,
        GIT_COMMITTER_NAME=AUTHOR[0],
        GIT_COMMITTER_EMAIL=AUTHOR[1],
        GIT_COMMITTER_DATE=DATE,
    )
    return env


def git(repo: Path, *args: str, capture: bool = False) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), *args], env=_git_env(), check=True, text=True, capture_output=capture
    )
    return result.stdout.strip() if capture else ""


def _commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--no-verify", "-m", message)


# ----------------------------------------------------------------------------- commands
def sdist(version: str) -> Path:
    """verl's sdist from the package index (cached), checked against the pinned SHA-256 if we have one."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"verl-{version}.tar.gz"
    if not path.exists():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", f"verl=={version}", "--no-binary", ":all:", "--no-deps",
                 "--disable-pip-version-check", "-q", "-d", tmp],
                check=True,
            )  # fmt: skip
            (found,) = glob.glob(os.path.join(tmp, "verl-*.tar.gz"))
            shutil.move(found, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    want = SDIST_SHA256.get(version)
    if want is None:
        print(f"verl {version}: sdist sha256 {digest} (not pinned; add it to SDIST_SHA256 once checked)")
    elif digest != want:
        path.unlink()
        raise SystemExit(f"verl {version}: sdist sha256 {digest} != pinned {want}; removed the download")
    return path


def pristine(version: str, dest: Path) -> None:
    """Unpack verl ``version``'s sdist into ``dest`` as a git repo with one commit, tagged ``pristine``."""
    archive = sdist(version)
    if dest.exists():
        raise SystemExit(f"{dest} exists; give a new directory")
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
        (top,) = Path(tmp).iterdir()
        if not (top / "tests" / "trainer" / "ppo" / "test_core_algos_on_cpu.py").exists():
            raise SystemExit(f"verl {version}'s sdist has no tests/trainer/ppo/test_core_algos_on_cpu.py")
        shutil.move(str(top), dest)
    git(dest, "init", "-q", "-b", "main")
    _commit_all(dest, f"verl {version} (PyPI sdist)")
    git(dest, "tag", PRISTINE_TAG)


def build(repo: Path) -> None:
    """Apply SERIES on top of ``repo``'s HEAD, one commit per patch."""
    for patch in SERIES:
        for edit in patch.edits:
            edit.apply(repo)
        _commit_all(repo, f"{patch.subject}\n\n{patch.body}")


def write_patches(repo: Path, out: Path) -> list[Path]:
    for old in out.glob("*.patch"):
        old.unlink()
    out.mkdir(parents=True, exist_ok=True)
    names = git(
        repo, "format-patch", "-q", "--zero-commit", "--full-index", "--no-signature", "--stat=80",
        "-o", str(out), f"{PRISTINE_TAG}..HEAD", capture=True,
    )  # fmt: skip
    return [Path(n) for n in names.splitlines()]


def am(repo: Path) -> None:
    patches = sorted(PATCHES.glob("*.patch"))
    if not patches:
        raise SystemExit(f"no patches in {PATCHES}")
    git(repo, "am", "-q", "--keep-non-patch", *map(str, patches))  # keep verl's "[module] type:" prefix


def verify(repo: Path) -> None:
    """Fail unless HEAD (the applied patches) has the same commits, tree by tree, as ``src`` builds."""
    applied = git(repo, "rev-list", "--reverse", f"{PRISTINE_TAG}..HEAD", capture=True).split()
    head = git(repo, "rev-parse", "HEAD", capture=True)
    git(repo, "checkout", "-q", "--detach", PRISTINE_TAG)
    try:
        build(repo)
        built = git(repo, "rev-list", "--reverse", f"{PRISTINE_TAG}..HEAD", capture=True).split()
    finally:
        git(repo, "checkout", "-q", "-f", "--detach", head)
    tree = lambda rev: git(repo, "rev-parse", f"{rev}^{{tree}}", capture=True)  # noqa: E731
    message = lambda rev: git(repo, "log", "-1", "--format=%B", rev, capture=True)  # noqa: E731
    stale = len(applied) != len(built) or any(
        tree(a) != tree(b) or message(a) != message(b) for a, b in zip(applied, built)
    )
    if stale:
        diff = git(repo, "diff", "--stat", head, built[-1] if built else PRISTINE_TAG, capture=True)
        raise SystemExit(
            "upstream/patches/ is out of date with upstream/src (run `python upstream/series.py regenerate`):\n" + diff
        )
    print(f"upstream/patches/ matches upstream/src ({len(built)} patches)")


def regenerate(version: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / f"verl-{version}"
        pristine(version, repo)
        build(repo)
        for path in write_patches(repo, PATCHES):
            print(path.relative_to(HERE.parent))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("regenerate", help="rewrite upstream/patches/ from upstream/src")
    p.add_argument("--version", default=VERL_VERSION)
    p = sub.add_parser("pristine", help="verl's sdist as a one-commit git repo")
    p.add_argument("--version", default=VERL_VERSION)
    p.add_argument("--dest", type=Path, required=True)
    for name in ("am", "verify"):
        sub.add_parser(name).add_argument("--repo", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "regenerate":
        regenerate(args.version)
    elif args.command == "pristine":
        pristine(args.version, args.dest)
    elif args.command == "am":
        am(args.repo)
    else:
        verify(args.repo)


if __name__ == "__main__":
    main()
