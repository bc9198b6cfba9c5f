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

Architecture (:mod:`.features`, :mod:`.model`; the paper does not state its critic, these are ours)
    Two stages. (1) *Support features* of each (user, item) from the observed points: the
    ridge-regularised user and item biases, log support counts, the user's and the item's
    (shrunk) residual spread and, when it predicts held-out points better, a cornac MF score.
    (2) A deep ensemble (default 5 members; Lakshminarayanan et al. 2017) of small MLPs reads
    ``[standardised features, mean category embedding, (need embedding)]`` and predicts a
    correction to the bias model's mean and a variance (``softplus + 1e-4``). Ensemble
    prediction: ``mean = avg mu_m``, ``var = avg s2_m + var(mu_m)`` (aleatoric + epistemic).
    Members are stacked into one batched network (``torch.baddbmm``).

Why this shape (docs/critic.md has the measurements)
    On sparse real data (ML-100k with 10 % of ratings observed: ~10 per user) an id-embedding
    network loses to a plain bias model and its intervals are too narrow, because it learns its
    variance from residuals of points it fitted. Here the training points' features are
    *cross-fitted* (computed without the point, :meth:`.features.SupportFeatures.cross_fit`), so
    the variance head learns how wrong a bias estimate from n_u ratings really is, and the
    biases' penalty is tuned on validation ("stronger regularisation for sparse data").

Loss and training (:mod:`.train`)
    Heteroscedastic Gaussian NLL ``0.5 (log s2 + (y - mu)^2 / s2)`` on the observed points'
    standardised out-of-fold residuals (optional beta-NLL), AdamW (lr 3e-3, 10 % linear warm-up
    then cosine decay), at most 40 epochs, early stopping on a *time-later* validation slice
    (each user's most recent 10 % of points; random without timestamps), then one scalar
    variance calibration (``var *= mean(z^2)`` on that slice). The serving statistics are refitted
    on all observed points. Trained before RL and frozen during it.

Baselines (:mod:`.baselines`, :mod:`.knn`) and evaluation (:mod:`.evaluate`, :mod:`.report`)
    Constant, ridge bias model, cornac MF, User-KNN and Item-KNN (the paper's Table 8 fillers)
    with the same ``predict`` interface, each tuned and given a held-out variance on the same
    validation slice; ``evaluate`` compares them on the same held-out points with paired
    bootstrap intervals, breakdowns and "does the variance carry information" figures.

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

from .baselines import BiasFiller, ConstantFiller, MFFiller, fit_baselines
from .data import CriticDataError, Interactions, Vocab, load_interactions, validation_split
from .fill import fill_ground_truth, fill_parquet, is_filled
from .knn import ItemKNNFiller, KNNFiller, UserKNNFiller
from .model import CriticConfig, CriticEnsemble, ensemble_moments, gaussian_nll
from .predictor import CriticPredictor, get_predictor
from .train import train_critic

__all__ = [
    "BiasFiller",
    "ConstantFiller",
    "CriticConfig",
    "CriticDataError",
    "CriticEnsemble",
    "CriticPredictor",
    "Interactions",
    "ItemKNNFiller",
    "KNNFiller",
    "MFFiller",
    "UserKNNFiller",
    "Vocab",
    "ensemble_moments",
    "fill_ground_truth",
    "fill_parquet",
    "fit_baselines",
    "gaussian_nll",
    "get_predictor",
    "is_filled",
    "load_interactions",
    "train_critic",
    "validation_split",
]
