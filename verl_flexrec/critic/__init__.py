"""FlexRec's uncertainty-aware critic: predict each unobserved reward's mean and variance.

Under sparse feedback (KuaiRec with 10 % of interactions observed) most candidates of a ranking
prompt have no observed gain. The critic predicts the need-free *base signal* (``interest``:
watch ratio, rating) of every (user, item) with a mean ``mu`` and a variance ``s2``; because every
need's gain is ``base * need_weight`` (:mod:`verl_flexrec.needs`), the filled gain is
``need_weight * mu`` with variance ``need_weight**2 * s2`` exactly. The reward manager reads the
filled ``gains`` / ``gain_var`` from the ground truth, and the advantage estimator scales each
rollout by ``c = clip(normalise(1 / (u + eps)))`` with ``u = sum_k d_k^2 s2_k / IDCG^2``
(:mod:`verl_flexrec.uncertainty`). The paper's "raw critic" ablation is the estimator flag
``algorithm.flexrec.uncertainty.enable=false``; the critic itself is unchanged.

Architecture (:mod:`.model`; the paper does not state its critic, these are our choices)
    A deep ensemble (default 5 members; Lakshminarayanan et al. 2017) of MLPs. Each member embeds
    the user id, the item id, the item's categories (mean of category embeddings) and optionally
    the need (all ``emb_dim=32``), feeds ``[e_u, e_i, e_cat, (e_need), e_u * e_i]`` through a SiLU
    MLP (128, 64) and has two heads: the mean and the variance (``softplus + 1e-4``, standardised
    units). Index 0 of each id table is "unknown" and is trained by *id dropout* (10 % of
    samples lose their user id, independently 10 % their item id), so an unseen user or item gets
    the population-level mean and the wider variance that really goes with it. Ensemble
    prediction: ``mean = avg mu_m``, ``var = avg s2_m + var(mu_m)`` (aleatoric + epistemic).
    Members are stacked into one batched network (``torch.baddbmm``) and each sees its own
    shuffled minibatches.

Loss and training (:mod:`.train`)
    Heteroscedastic Gaussian NLL ``0.5 (log s2 + (y - mu)^2 / s2)`` on the observed interactions
    only (optional beta-NLL), targets standardised, AdamW (lr 3e-3 with 10 % linear warm-up then
    cosine decay, weight decay 1e-4), batch 2048 (smaller on small data), at most 40 epochs,
    early stopping on a held-out 10 % of the observed points (patience 5; the epoch with the best
    *calibrated* held-out NLL is restored), then one scalar variance calibration
    (``var *= mean(z^2)`` on that slice). Trained before RL and frozen during it. On a busy
    shared CPU pass ``--threads 1``: torch's OpenMP fork/join per op then dominates otherwise.

Baselines (:mod:`.knn`)
    User-KNN and Item-KNN mean-centred neighbourhood CF (scikit-learn ``NearestNeighbors``,
    cosine), the paper's Table 8 fillers, with the same ``predict`` interface; their variance is
    the neighbours' residual dispersion.

Serving: offline fill or a reward-loop-side loader (:mod:`.fill`, :mod:`.predictor`)
    ``python -m verl_flexrec.critic fill`` writes ``gains`` / ``gain_var`` into the parquet, so
    the reward manager needs no model at run time (the default). For live filling, the reward
    manager calls :func:`get_predictor` (a per-process cached :class:`CriticPredictor`) and, for
    a sample whose ground truth is not yet filled (:func:`is_filled`), :meth:`CriticPredictor.fill`.
    We chose this loader over a separate Ray actor because verl already runs the reward manager
    inside ``RewardLoopWorker`` Ray actors (CPU): loading a checkpoint of a few MB there costs
    milliseconds once, and a forward pass of the MLP ensemble over ~30 candidates takes about
    0.4 ms (``benchmarks/bench_critic.py``; 1 ms for ``fill`` of a whole ground-truth record),
    while an actor would add a remote call (serialisation, scheduling, a round trip) per
    rollout, a resource to place, and a failure point, to save nothing. The predictor imports
    torch and numpy only, never verl.

Ground-truth fields (:class:`verl_flexrec.schema.GroundTruth`)
    Read: ``user_id``, ``item_ids``, ``observed``, ``interest`` (training: observed points),
    ``categories`` (side information), ``need``, ``need_weight`` (fill). Written by fill: ``gains``
    and ``gain_var`` at unobserved positions only; observed gains are untouched.

CLI: ``python -m verl_flexrec.critic {train,fill,evaluate,synth} --help``.
"""

from .data import CriticDataError, Interactions, Vocab, load_interactions
from .fill import fill_ground_truth, fill_parquet, is_filled
from .knn import ItemKNNFiller, KNNFiller, UserKNNFiller
from .model import CriticConfig, CriticEnsemble, ensemble_moments, gaussian_nll
from .predictor import CriticPredictor, get_predictor
from .train import train_critic

__all__ = [
    "CriticConfig",
    "CriticDataError",
    "CriticEnsemble",
    "CriticPredictor",
    "Interactions",
    "ItemKNNFiller",
    "KNNFiller",
    "UserKNNFiller",
    "Vocab",
    "ensemble_moments",
    "fill_ground_truth",
    "fill_parquet",
    "gaussian_nll",
    "get_predictor",
    "is_filled",
    "load_interactions",
    "train_critic",
]
