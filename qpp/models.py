"""Regressors (and an optional learning-to-rank model) that predict a query's target from its features.

All are seeded and sized so the default run stays fast on 2 CPU cores (docs/QPP.md §Models):

* ``linear``  — StandardScaler + LinearRegression;
* ``mlp``     — StandardScaler + MLPRegressor(hidden (100,), adam, early_stopping, max_iter 200, random_state=seed);
  early stopping holds out 10 % of the fitting queries, so with fewer than ``MLP_MIN_EARLY_STOPPING`` of them (a
  small collection) it is off and the MLP trains for max_iter;
* ``xgboost`` — xgboost.XGBRegressor(hist, 300 trees, depth 4, lr 0.05, subsample/colsample 0.8, n_jobs=2, seed);
* ``gbr``     — sklearn GradientBoostingRegressor(150 trees, depth 3, lr 0.05, subsample 0.8, max_features 0.3, seed)
  (what the fork called "XGBoost");
* ``tree``    — DecisionTreeRegressor(max_depth 6, min_samples_leaf 20, seed);
* ``xgb_ltr`` (with ``--ltr``) — xgboost.XGBRanker(rank:pairwise), one query group per clip (qid = clip), label =
  the clip-relative goodness ``max(y) − y`` of the badness target; it outputs a score (higher = better) that
  :func:`fit_predict` negates so every model returns a *badness* prediction (lower = predicted better).

``fork_model(name, seed)`` gives the fork's settings (MLP random_state 1, max_iter 500; GBR, tree and LR defaults,
with GBR and the tree seeded: the fork left them unseeded).
"""
from __future__ import annotations

import warnings

import numpy as np

MODELS = ("linear", "mlp", "xgboost", "gbr", "tree")
LTR_MODEL = "xgb_ltr"
MLP_MIN_EARLY_STOPPING = 20  # sklearn refuses a validation split of < 2 rows (10 % of the fitting queries)
MODEL_HELP = {
    "linear": "StandardScaler + LinearRegression",
    "mlp": "StandardScaler + MLPRegressor (100 hidden, early stopping)",
    "xgboost": "xgboost.XGBRegressor (300 trees, depth 4)",
    "gbr": "sklearn GradientBoostingRegressor (150 trees, depth 3)",
    "tree": "DecisionTreeRegressor (depth 6)",
}


def make_model(name: str, seed: int = 0):
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import LinearRegression
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeRegressor

    if name == "linear":
        return make_pipeline(StandardScaler(), LinearRegression())
    if name == "mlp":
        return make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(100,), alpha=1e-3, max_iter=200,
                                                            early_stopping=True, n_iter_no_change=10,
                                                            random_state=seed))
    if name == "xgboost":
        import xgboost
        return xgboost.XGBRegressor(n_estimators=300, max_depth=4, learning_rate=0.05, subsample=0.8,
                                    colsample_bytree=0.8, min_child_weight=5, tree_method="hist", n_jobs=2,
                                    random_state=seed)
    if name == "gbr":
        return GradientBoostingRegressor(n_estimators=150, max_depth=3, learning_rate=0.05, subsample=0.8,
                                         max_features=0.3, random_state=seed)
    if name == "tree":
        return DecisionTreeRegressor(max_depth=6, min_samples_leaf=20, random_state=seed)
    if name == LTR_MODEL:
        import xgboost
        return xgboost.XGBRanker(objective="rank:pairwise", n_estimators=200, max_depth=4, learning_rate=0.05,
                                 subsample=0.8, colsample_bytree=0.8, tree_method="hist", n_jobs=2,
                                 random_state=seed)
    raise ValueError(name)


def fork_model(name: str, seed: int = 0):
    """The fork's regressors, with its settings (QPP notebook `classify`).

    The fork left GradientBoostingRegressor and DecisionTreeRegressor unseeded, so its numbers changed from run to
    run (both draw feature orders at random); here ``seed`` fixes that draw: same seed, same numbers.
    """
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import LinearRegression
    from sklearn.neural_network import MLPRegressor
    from sklearn.tree import DecisionTreeRegressor

    return {"linear": lambda: LinearRegression(),
            "mlp": lambda: MLPRegressor(random_state=1, max_iter=500),
            "gbr": lambda: GradientBoostingRegressor(random_state=seed),
            "tree": lambda: DecisionTreeRegressor(random_state=seed)}[name]()


def fit_predict(name: str, x_fit: np.ndarray, y_fit: np.ndarray, x_eval: np.ndarray, k: int, seed: int = 0,
                model=None) -> np.ndarray:
    """Fit on ``(x_fit, y_fit)`` (y = badness, clip-major rows) and return badness predictions for ``x_eval``."""
    if model is None:
        model = make_model(name, seed)
        if name == "mlp" and len(x_fit) < MLP_MIN_EARLY_STOPPING:
            model.set_params(mlpregressor__early_stopping=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings of the capped MLP
        if name == LTR_MODEL:
            y = np.asarray(y_fit, dtype=np.float64).reshape(-1, k)
            label = (y.max(axis=1, keepdims=True) - y).ravel()
            qid = np.repeat(np.arange(y.shape[0]), k)
            model.fit(x_fit, label, qid=qid)
            return -np.asarray(model.predict(x_eval), dtype=np.float64)
        model.fit(x_fit, y_fit)
        return np.asarray(model.predict(x_eval), dtype=np.float64).ravel()


def group_folds(n_groups: int, n_splits: int, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cross-fitting folds over clip-major rows by clip group (sklearn GroupKFold on shuffled clip labels).

    Returns ``[(fit_rows, eval_rows), ...]``; the K captions of a clip are always on the same side.
    """
    from sklearn.model_selection import GroupKFold

    if n_splits < 2 or n_splits > n_groups:
        raise ValueError(f"need 2 <= folds <= clips ({n_groups}), got {n_splits}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_groups)  # GroupKFold is deterministic by size; shuffle which clips share a fold
    groups = np.repeat(perm, k)
    rows = np.arange(n_groups * k)
    return [(np.sort(a), np.sort(b)) for a, b in GroupKFold(n_splits=n_splits).split(rows, groups=groups)]
