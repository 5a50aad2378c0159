"""A head: a classifier on frozen features, trained in seconds to minutes on a CPU.

A head maps the rows of one or more feature sources (:mod:`cbedtdc.features`: a backbone's
penultimate activations, the symmetry descriptors) to class probabilities. Three kinds:
``linear``
    A softmax layer trained with AdamW (mini-batches, cosine schedule, zero initialisation, so the
    same seed gives the same weights on CPU). Losses (the long-tail baselines of Zhang et al., "Bag
    of Tricks for long-tailed visual recognition", AAAI 2021):

    - ``ce``; ``weighted_ce`` (inverse class frequency, capped);
    - ``drw``: deferred re-weighting (Cao et al., NeurIPS 2019): ``ce`` for the first
      ``drw_start`` fraction of the epochs, then ``weighted_ce``;
    - ``logit_adjusted`` (Menon et al., ICLR 2021) and ``balanced_softmax`` (Ren et al., NeurIPS 2020).

    ``sampler: class_balanced`` draws every class equally often: on frozen features this is
    classifier re-training, cRT (Kang et al., "Decoupling representation and classifier", ICLR 2020).
    ``tau_norm`` rescales each class's weight vector by ``1 / ||w_c||^tau`` at prediction (the
    same paper's tau-normalisation); the bias, which carries the training prior, is then dropped.
``mlp``
    ``layers`` hidden layers of ``hidden`` units (ReLU, ``dropout`` while fitting) before the softmax layer
    (:mod:`cbedtdc.heads.mlp`), for classes the features separate only nonlinearly. It is fitted by the linear
    head's loop (same optimiser, schedule, losses and samplers; hidden weights and dropout masks drawn from the
    seed). ``tau_norm`` rescales the weight vectors of its output layer, the linear classifier on the learnt
    hidden features, as Kang et al. do for the last layer of a deep network.
``xgboost``
    Gradient-boosted trees (``multi:softprob``, histogram method), optionally with inverse-frequency
    sample weights (``loss: weighted_ce``), early stopping on dev.

All kinds share: standardisation of the features (training mean and std, kept in the head);
optional resampling of the standardised training features with imbalanced-learn (``SMOTE``,
``BorderlineSMOTE``, ``ClusterCentroids``); post-hoc logit adjustment (``posthoc_tau``: subtract
``tau * log prior`` from the scores, the prior being the class frequencies the head was fitted on,
:attr:`Head.prior`); and a temperature fitted on dev by minimising the log-loss (Guo et al., "On
calibration of modern neural networks", ICML 2017), applied last.

Options: :mod:`cbedtdc.heads.options`. Files: a linear or mlp head is ``torch.save`` of a plain dict of tensors
and metadata, read back with ``torch.load(weights_only=True)``; an XGBoost head is XGBoost's own JSON model with
the head's metadata in a booster attribute. All are written atomically and predict identically after reloading.
"""

from __future__ import annotations

import json
import logging
import math
import zipfile
from pathlib import Path

import numpy as np

from cbedtdc.calibration import fit_temperature, softmax
from cbedtdc.heads.booster import booster_probs, fit_booster
from cbedtdc.heads.mlp import forward, hidden_features, init_layers
from cbedtdc.heads.options import HEAD_FORMAT, TORCH_KINDS, HeadError, resolve_spec
from cbedtdc.heads.resample import resample

__all__ = ["standardisation", "Head", "fit_head", "load_head"]

_XGB_ATTR = "cbedtdc_head"

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- pure helpers
def _check_xy(X, y, n_classes: int, what: str):
    """``X`` as C-contiguous float32 (N, D), ``y`` as int64 in ``[0, n_classes)``; HeadError otherwise."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise HeadError(f"{what}: features must be a non-empty (N, D) array, got shape {X.shape}")
    if not np.isfinite(X).all():
        bad = int(np.flatnonzero(~np.isfinite(X).all(axis=1))[0])
        raise HeadError(f"{what}: sample {bad} has a NaN or infinite feature; re-extract the features")
    if y is None:
        return X, None
    y = np.asarray(y)
    if y.shape != (len(X),):
        raise HeadError(f"{what}: {len(X)} feature rows but labels of shape {y.shape}")
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes):
        raise HeadError(f"{what}: labels must be integers in [0, {n_classes}), got range "
                        f"[{y.min()}, {y.max()}] of dtype {y.dtype}")
    return X, y.astype(np.int64)


def standardisation(X) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std (float32); a constant feature gets std 1.

    >>> m, s = standardisation(np.array([[0.0, 5.0], [2.0, 5.0]]))
    >>> m.tolist(), s.tolist()
    ([1.0, 5.0], [1.0, 1.0])
    """
    X = np.asarray(X, dtype=np.float64)
    mean, std = X.mean(axis=0), X.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


# --------------------------------------------------------------------------- the head
class Head:
    """A fitted head: standardisation, a linear layer (after the hidden layers of an mlp) or a booster, and the
    post-hoc steps.

    Use :func:`fit_head` to create one and :func:`load_head` to read a saved one.

    Attributes
    ----------
    spec : dict
        Resolved options (:func:`resolve_spec`).
    n_classes : int
    mean, std : ndarray (D,)
        Standardisation of the input features.
    fit_counts : ndarray (n_classes,)
        Class counts of the set the head was fitted on (after resampling); see :attr:`prior`.
    weight, bias : ndarray (n_classes, H), (n_classes,)
        Output layer of a linear or mlp head (``H``: ``D``, or the mlp's ``hidden``).
    hidden : list of (weight, bias)
        Hidden layers of an mlp head (``[]`` otherwise).
    temperature : float
    info : dict
        Caller's metadata (JSON types) plus the fit's record (``n_train``, ``counts``, ...).
    """

    def __init__(self, spec, n_classes, mean, std, fit_counts, *, temperature=1.0, info=None, weight=None,
                 bias=None, hidden=None, booster=None):
        self.spec, self.n_classes = resolve_spec(spec), int(n_classes)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.fit_counts = np.asarray(fit_counts, dtype=np.int64)
        self.temperature, self.info = float(temperature), dict(info or {})
        self.weight = None if weight is None else np.asarray(weight, dtype=np.float32)
        self.bias = None if bias is None else np.asarray(bias, dtype=np.float32)
        self.hidden = [(np.asarray(w, dtype=np.float32), np.asarray(b, dtype=np.float32)) for w, b in hidden or ()]
        self.booster = booster

    @property
    def kind(self) -> str:
        return self.spec["kind"]

    @property
    def dim(self) -> int:
        return int(self.mean.size)

    def _standardise(self, X) -> np.ndarray:
        X, _ = _check_xy(X, None, self.n_classes, "features")
        if X.shape[1] != self.dim:
            raise HeadError(f"features have {X.shape[1]} columns, the head was fitted on {self.dim}")
        return (X - self.mean) / self.std

    def raw_scores(self, X) -> np.ndarray:
        """Scores before post-hoc adjustment and temperature: logits (linear and mlp, the output layer
        tau-normalised when ``tau_norm > 0``) or log-probabilities (XGBoost), float64 ``(N, n_classes)``."""
        Xs = self._standardise(X)
        if self.kind in TORCH_KINDS:
            Xs = hidden_features(self.hidden, Xs)
            tau = float(self.spec["tau_norm"])
            if tau > 0:
                norm = np.maximum(np.linalg.norm(self.weight.astype(np.float64), axis=1), 1e-12)
                w = (self.weight / norm[:, None] ** tau).astype(np.float32)
                return (Xs @ w.T).astype(np.float64)
            return (Xs @ self.weight.T + self.bias).astype(np.float64)
        return np.log(np.maximum(booster_probs(self.booster, Xs), 1e-12))

    @property
    def prior(self) -> np.ndarray:
        """Class frequencies the head was fitted on: ``fit_counts`` (a class without sample counts as
        1), or uniform over the fitted classes with ``sampler: class_balanced``."""
        n = np.maximum(self.fit_counts.astype(np.float64), 1.0)
        if self.spec["sampler"] == "class_balanced":
            n = np.where(self.fit_counts > 0, 1.0, 1.0 / max(1, int(self.fit_counts.max())))
        return n / n.sum()

    def _adjusted(self, scores: np.ndarray) -> np.ndarray:
        tau = float(self.spec["posthoc_tau"])
        if tau > 0:
            scores = scores - tau * np.log(self.prior)[None, :]
        return scores

    def logits(self, X) -> np.ndarray:
        """Final scores: raw scores, post-hoc logit adjustment, divided by the temperature."""
        return self._adjusted(self.raw_scores(X)) / self.temperature

    def predict_proba(self, X, calibrated: bool = True) -> np.ndarray:
        """Class probabilities ``(N, n_classes)``, float64, rows summing to one; ``calibrated=False``: before
        the temperature (the reliability diagram's "before")."""
        return softmax(self.logits(X) if calibrated else self._adjusted(self.raw_scores(X)))

    def predict(self, X) -> np.ndarray:
        """Most probable class index of each row."""
        return np.argmax(self.logits(X), axis=1)

    def metadata(self) -> dict:
        """Everything but the weights, as JSON types."""
        return json.loads(json.dumps({"format": HEAD_FORMAT, "spec": self.spec, "n_classes": self.n_classes,
                                      "fit_counts": self.fit_counts.tolist(), "temperature": self.temperature,
                                      "info": self.info}))

    def save(self, path) -> Path:
        """Write the head atomically: ``torch.save`` dict (linear, mlp) or XGBoost JSON (xgboost)."""
        from cbedtdc.io import atomic_path

        path = Path(path)
        if self.kind in TORCH_KINDS:
            import torch

            obj = {**self.metadata(), "weight": torch.from_numpy(self.weight.copy()),
                   "bias": torch.from_numpy(self.bias.copy()), "mean": torch.from_numpy(self.mean.copy()),
                   "std": torch.from_numpy(self.std.copy())}
            if self.hidden:
                obj["hidden_weights"] = [torch.from_numpy(w.copy()) for w, _ in self.hidden]
                obj["hidden_biases"] = [torch.from_numpy(b.copy()) for _, b in self.hidden]
            with atomic_path(path) as tmp:
                torch.save(obj, tmp)
        else:
            if path.suffix != ".json":
                raise HeadError(f"{path}: an xgboost head is saved as XGBoost JSON; give a path ending in .json")
            meta = {**self.metadata(), "mean": self.mean.tolist(), "std": self.std.tolist(),
                    "best_iteration": getattr(self.booster, "best_iteration", None)}
            self.booster.set_attr(**{_XGB_ATTR: json.dumps(meta)})
            with atomic_path(path, suffix=".json") as tmp:
                self.booster.save_model(str(tmp))
        log.info("%s head (%d classes, %d features) -> %s", self.kind, self.n_classes, self.dim, path)
        return path


# --------------------------------------------------------------------------- fitting
def _epoch_order(y: np.ndarray, sampler: str, seed: int, epoch: int) -> np.ndarray:
    """Sample order of one epoch: a permutation, or ``len(y)`` class-balanced draws with replacement."""
    rng = np.random.default_rng([int(seed), int(epoch), 0x4EAD])
    if sampler == "instance":
        return rng.permutation(len(y))
    cnt = np.bincount(y)
    w = 1.0 / cnt[y]
    return rng.choice(len(y), size=len(y), replace=True, p=w / w.sum())


def _fit_torch(X: np.ndarray, y: np.ndarray, counts: np.ndarray, spec: dict, seed: int):
    """The one loop of the torch heads: AdamW (weight decay on the weights only) on the layers of
    :func:`~cbedtdc.heads.mlp.init_layers` (the output layer alone for ``linear``), a cosine schedule per step,
    the sampler's epoch order and the loss (``drw``: ``ce``, then ``weighted_ce``).

    Returns ``(hidden [(weight, bias), ...], output weight, output bias, last epoch's mean loss)`` in numpy.
    """
    import torch

    from cbedtdc.losses import make_loss

    n, d = X.shape
    xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(int(seed))
    deep = spec["kind"] == "mlp"
    params = init_layers(d, len(counts), hidden=int(spec["hidden"]), layers=int(spec["layers"]) if deep else 0,
                         generator=gen)
    dropout = float(spec["dropout"]) if deep else 0.0
    opt = torch.optim.AdamW([{"params": [w for w, _ in params], "weight_decay": float(spec["weight_decay"])},
                             {"params": [b for _, b in params], "weight_decay": 0.0}], lr=float(spec["lr"]))
    bs, epochs = min(int(spec["batch_size"]), n), int(spec["epochs"])
    steps = math.ceil(n / bs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / (epochs * steps))))
    kw = {"la_tau": float(spec["la_tau"]), "weight_cap": float(spec["weight_cap"])}
    first = make_loss("ce" if spec["loss"] == "drw" else spec["loss"], counts, **kw)
    late = make_loss("weighted_ce", counts, **kw) if spec["loss"] == "drw" else first
    switch = round(float(spec["drw_start"]) * epochs)
    mean_loss = float("nan")
    for epoch in range(epochs):
        fn = late if epoch >= switch else first
        order = torch.from_numpy(_epoch_order(y, spec["sampler"], seed, epoch))
        total = 0.0
        for s in range(steps):
            idx = order[s * bs:(s + 1) * bs]
            loss = fn(forward(params, xt[idx], dropout=dropout, generator=gen), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        mean_loss = total / n
    out = [(w.detach().numpy().copy(), b.detach().numpy().copy()) for w, b in params]
    return out[:-1], out[-1][0], out[-1][1], mean_loss


def fit_head(X, y, n_classes: int, *, spec: dict | None = None, dev=None, seed: int = 0, info=None,
             source: str = "train features") -> Head:
    """Fit one head on features.

    Parameters
    ----------
    X : array_like (N, D)
        Training features (float32).
    y : array_like of int (N,)
        Output index of each sample, in ``[0, n_classes)``; classes may be absent.
    n_classes : int
        Outputs of the head (the job's classes, plus "rest" where it has one).
    spec : dict, optional
        Head options (:data:`DEFAULTS`).
    dev : (X_dev, y_dev), optional
        Held-out features and labels: temperature (when ``spec["temperature"]``) and XGBoost early
        stopping. Never the test split.
    seed : int
        Seed of initialisation order, sampling and resampling.
    info : dict, optional
        JSON-able metadata kept in the head file (e.g. classes, backbone checkpoint).
    source : str
        Name of the input in error messages (e.g. the features file).
    """
    spec = resolve_spec(spec)
    n_classes = int(n_classes)
    try:
        info = json.loads(json.dumps(info or {}))
    except (TypeError, ValueError) as err:
        raise HeadError(f"{source}: head info must hold JSON types only ({err})") from err
    if n_classes < 2:
        raise HeadError(f"{source}: a head needs at least 2 outputs, got n_classes={n_classes}")
    X, y = _check_xy(X, y, n_classes, source)
    mean, std = standardisation(X)
    Xs = (X - mean) / std
    counts = np.bincount(y, minlength=n_classes)
    Xr, yr = resample(Xs, y, spec["resample"], n_classes=n_classes, seed=seed, k_neighbors=int(spec["resample_k"]),
                      target=int(spec["resample_to"]))
    fit_counts = np.bincount(yr, minlength=n_classes)
    devs = None
    if dev is not None:
        Xd, yd = _check_xy(dev[0], dev[1], n_classes, f"{source} (dev)")
        devs = ((Xd - mean) / std, yd)
    record = {"n_train": int(len(y)), "n_fit": int(len(yr)), "counts": counts.tolist(), "seed": int(seed),
              "n_dev": 0 if devs is None else int(len(devs[1]))}
    if spec["kind"] in TORCH_KINDS:
        from cbedtdc.features.cnn import torch_threads

        with torch_threads(int(spec["threads"])):
            hidden, w, b, loss = _fit_torch(Xr, yr, fit_counts, spec, seed)
        head = Head(spec, n_classes, mean, std, fit_counts, weight=w, bias=b, hidden=hidden,
                    info={**info, **record, "train_loss": loss})
    else:
        from cbedtdc.losses import class_weights

        w = (class_weights(fit_counts, float(spec["weight_cap"]))[yr] if spec["loss"] == "weighted_ce" else None)
        booster = fit_booster(Xr, yr, n_classes, params=spec["xgboost"], seed=seed, dev=devs,
                              threads=int(spec["threads"]), weight=w)
        record["best_iteration"] = getattr(booster, "best_iteration", None)
        head = Head(spec, n_classes, mean, std, fit_counts, booster=booster, info={**info, **record})
    if spec["temperature"] and devs is not None and len(devs[1]):
        head.temperature = fit_temperature(head._adjusted(head.raw_scores(dev[0])), devs[1])
        dev_pred = head.predict(dev[0])
        head.info["dev_accuracy"] = float(np.mean(dev_pred == devs[1]))
    log.info("%s head, loss %s, sampler %s, resample %s: %d samples (%d fitted), %d classes, T=%.3f",
             spec["kind"], spec["loss"], spec["sampler"], spec["resample"], len(y), len(yr), n_classes,
             head.temperature)
    return head


# --------------------------------------------------------------------------- reading
def load_head(path) -> Head:
    """Read a head written by :meth:`Head.save` (``weights_only=True`` for linear and mlp heads)."""
    path = Path(path)
    if not path.is_file():
        raise HeadError(f"{path}: head file not found; rerun its head rule")
    if zipfile.is_zipfile(path):
        return _load_linear(path)
    return _load_xgboost(path)


def _load_linear(path: Path) -> Head:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, disallowed global, I/O error
        raise HeadError(f"{path}: not a readable head file ({type(err).__name__}); delete it and rerun "
                        "its head rule") from err
    if not isinstance(obj, dict) or obj.get("format") != HEAD_FORMAT:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise HeadError(f"{path}: not a {HEAD_FORMAT} file (found {found!r})")
    hidden = [(w.numpy(), b.numpy()) for w, b in zip(obj.get("hidden_weights", []), obj.get("hidden_biases", []))]
    layers = int(obj["spec"].get("layers", 0)) if obj["spec"].get("kind") == "mlp" else 0
    if len(hidden) != layers:
        raise HeadError(f"{path}: the head's options ask for {layers} hidden layer(s), the file holds {len(hidden)}; "
                        "delete it and rerun its head rule")
    return Head(obj["spec"], obj["n_classes"], obj["mean"].numpy(), obj["std"].numpy(), obj["fit_counts"],
                temperature=obj["temperature"], info=obj["info"], weight=obj["weight"].numpy(),
                bias=obj["bias"].numpy(), hidden=hidden)


def _load_xgboost(path: Path) -> Head:
    import xgboost as xgb

    try:
        booster = xgb.Booster()
        booster.load_model(str(path))
        meta = json.loads(booster.attr(_XGB_ATTR) or "null")
    except (OSError, ValueError, xgb.core.XGBoostError) as err:
        raise HeadError(f"{path}: not a readable head file ({type(err).__name__}); delete it and rerun "
                        "its head rule") from err
    if not isinstance(meta, dict) or meta.get("format") != HEAD_FORMAT:
        raise HeadError(f"{path}: an XGBoost model without {HEAD_FORMAT} metadata (not written by fit_head)")
    if meta.get("best_iteration") is not None:
        booster.best_iteration = int(meta["best_iteration"])
    return Head(meta["spec"], meta["n_classes"], meta["mean"], meta["std"], meta["fit_counts"],
                temperature=meta["temperature"], info=meta["info"], booster=booster)
