"""The body of ``physics`` and ``hybrid`` runs: gradient-boosted trees instead of a CNN.

``physics`` fits scikit-learn's HistGradientBoostingClassifier on the physics features of
every frame (:mod:`arflare.physics`); ``hybrid`` adds the penultimate embedding of a source
CNN run (:mod:`arflare.embedding`). Rounds of trees play the part of epochs: after each, the
validation scores are reported (so sweeps prune and plots show curves), the threshold is
chosen on validation, and early stopping keeps the best round. Test is scored once, with the
best round and validation's threshold, and reported exactly as CNN runs are, so ``compare``
ranks every kind in one table. Extra artifacts: ``model/gbm.joblib``, ``features.json`` (the
feature table's digest and columns) and the permutation importances on validation.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss

from arflare import record
from arflare.checkpoints import BestCheckpoint
from arflare.data.index import DataIndex
from arflare.evaluation import Evaluation, Reporter, SplitScores, choose_threshold, final_metrics, report, split_metrics
from arflare.physics import boosting
from arflare.physics.table import FEATURE_COLUMNS, definitions_digest, feature_table
from arflare.spec import RunSpec
from arflare.trainer import TrainResult

log = logging.getLogger("arflare.tabular")
EMBEDDING_GROUP = "cnn embedding (all columns)"


def fit_tabular(spec: RunSpec, *, index: DataIndex, reporter: Reporter, out_dir: Path, progress: bool = True,
                on_validation: Callable[[int, dict[str, float]], None] | None = None, run_name: str = "") -> TrainResult:
    """Fit round by round, keep the best round on validation, test it once and report everything.

    Args:
        spec: A resolved spec of model.kind physics or hybrid (a hybrid's source pinned and fetched).
        index: The shard index.
        reporter: Receives per-round metrics (step = round), final metrics and artifacts.
        out_dir: The run's local folder.
        progress: Progress bars while features or embeddings are computed.
        on_validation: Called after each round's metrics are reported (a sweep's pruner).
        run_name: Named in the figures' captions, as for a CNN run.
    """
    table, groups = _design(spec, index, progress=progress)
    columns = [c for c in table.columns if c in FEATURE_COLUMNS or c.startswith("cnn_")]
    x = table[columns].to_numpy(np.float64)
    y = _labels(table, spec.data.min_flare_class)
    rows = {split: np.flatnonzero(table["split"].to_numpy() == split) for split in ("train", "val", "test")}
    gbm = spec.model.boosting
    model = boosting.make_classifier(learning_rate=gbm.learning_rate, max_depth=gbm.max_depth,
                                     l2_regularization=gbm.l2_regularization, max_leaf_nodes=gbm.max_leaf_nodes,
                                     min_samples_leaf=gbm.min_samples_leaf, class_weight=gbm.class_weight,
                                     seed=spec.train.seed)  # fmt: skip
    rule = spec.train.early_stopping
    best = BestCheckpoint(min_delta=rule.min_delta, patience=rule.patience, min_epochs=rule.min_epochs)
    keep_rate = _keep_rate(gbm.class_weight, y[rows["train"]])
    history: dict[str, list[float]] = {}
    kept = {}

    def after_round(number: int, fitted) -> bool:
        val = _score(fitted, x, y, rows["val"])
        threshold, constrained = choose_threshold(spec, val)
        scores = split_metrics(val, threshold, keep_rate)
        metrics = {"train/loss": _score(fitted, x, y, rows["train"]).loss, **{f"val/{k}": v for k, v in scores.items()}}
        for name, value in metrics.items():
            history.setdefault(name, []).append(value)
        reporter.log_metrics(metrics, step=number)
        if on_validation is not None:
            on_validation(number, metrics)
        monitored = -scores["loss"] if spec.eval.monitor == "loss" else scores[spec.eval.monitor]
        if best.update(number, monitored, threshold=threshold, constrained=constrained):
            kept["model"] = boosting.snapshot(fitted)
        log.info("round %d (%d trees): val/auc %.4f val/tss %.4f", number, fitted.n_iter_, scores["auc"], scores["tss"])
        return best.should_stop(number)

    rounds = boosting.boost_rounds(model, x[rows["train"]], y[rows["train"]], rounds=spec.train.epochs,
                                   trees_per_round=gbm.trees_per_round, after_round=after_round)  # fmt: skip
    final = kept["model"]
    splits = {split: _score(final, x, y, rows[split]) for split in ("val", "test")}
    metrics = final_metrics(splits, best.threshold, keep_rate)
    evaluation = Evaluation(splits=splits, metrics=metrics, threshold=best.threshold,
                            threshold_meets_constraints=best.constrained, best_epoch=best.best_epoch,
                            epochs_run=rounds, history=history, keep_rate=keep_rate)  # fmt: skip
    # report() reads what it needs of a dataset: the samples' table and their labels.
    frames = {split: SimpleNamespace(frame_table=table.iloc[rows[split]], labels=y[rows[split]]) for split in rows}
    report(evaluation, spec=spec, datasets=frames, index=index, reporter=reporter, out_dir=out_dir, run_name=run_name)
    _report_model(spec, final, table, columns, groups, x[rows["val"]], y[rows["val"]], reporter, out_dir)
    return TrainResult(metrics=metrics, best_epoch=best.best_epoch, epochs_run=rounds, threshold=best.threshold,
                       history=history)


def _keep_rate(class_weight: str, train_labels: np.ndarray) -> float | None:
    """The odds factor of the fit: ``balanced`` class weights act like ``data.balance: weights``."""
    from arflare.calibration import negative_keep_rate

    if class_weight != "balanced" or train_labels.min() == train_labels.max():
        return None
    return negative_keep_rate("weights", 1.0, n_pos=int(train_labels.sum()), n_neg=int((train_labels == 0).sum()))


def _design(spec: RunSpec, index: DataIndex, *, progress: bool) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """The feature table (plus the source embedding for hybrids) and the importance groups."""
    table = feature_table(index, cache_dir=spec.data.cache_dir, progress=progress)
    groups = {name: [name] for name in FEATURE_COLUMNS}
    if spec.model.kind == "hybrid":
        from arflare.embedding import embed
        from arflare.source_runs import source_files

        source = source_files(spec)
        embedding = embed(source.spec, source.weights, index, progress=progress)
        log.info("embedding of run %s: %d columns", source.run_id, embedding.shape[1] - 1)
        table = table.merge(embedding, on="key", how="left", validate="one_to_one")
        groups[EMBEDDING_GROUP] = [c for c in embedding.columns if c != "key"]
    return table, groups


def _labels(table: pd.DataFrame, min_flare_class: str) -> np.ndarray:
    if min_flare_class == "M":  # the datasets' rule: only M and X flares count
        return table["reg_label"].str.upper().str.startswith(("M", "X")).to_numpy(np.int64)
    return table["label"].to_numpy(np.int64)


def _score(model, x: np.ndarray, y: np.ndarray, rows: np.ndarray) -> SplitScores:
    scores = boosting.scores(model, x[rows])
    loss = float(log_loss(y[rows], np.clip(scores, 1e-7, 1 - 1e-7), labels=[0, 1]))
    return SplitScores(labels=y[rows], scores=scores.astype(float), loss=loss, indices=np.arange(len(rows)))


def _report_model(spec, model, table, columns, groups, x_val, y_val, reporter, out_dir: Path) -> None:
    """The fitted model, what the feature table was, and permutation importances on validation."""
    import joblib


    path = out_dir / record.ARTIFACT_MODEL
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, path)
    reporter.log_artifact(path, str(Path(record.ARTIFACT_MODEL).parent))
    digest = hashlib.sha256(pd.util.hash_pandas_object(table[["key", *columns]], index=False).to_numpy().tobytes())
    reporter.log_dict({"table_digest": digest.hexdigest()[:16], "definitions_digest": definitions_digest(),
                       "rows": len(table), "columns": columns}, record.ARTIFACT_FEATURES)  # fmt: skip
    positions = {name: i for i, name in enumerate(columns)}
    importances = boosting.grouped_permutation_importance(
        model, x_val, y_val, {name: [positions[c] for c in cols] for name, cols in groups.items()},
        repeats=spec.model.boosting.importance_repeats, seed=spec.train.seed)
    csv = out_dir / record.ARTIFACT_IMPORTANCES
    importances.to_csv(csv, index=False)
    reporter.log_artifact(csv)
    if spec.eval.plots and importances["importance"].notna().any():
        from arflare.plots import Caption, plot_importances
        from arflare.reports import FORECAST_WINDOW_H

        top = importances.head(20)
        caption = Caption(run="", split="val", flare_class=spec.data.min_flare_class, window_h=FORECAST_WINDOW_H)
        figure = plot_importances(top["feature"].tolist(), top["importance"], top["std"],
                                  out_dir / record.PLOTS / "permutation_importance_val.png", caption=caption,
                                  labels=y_val)  # fmt: skip
        reporter.log_artifact(figure, record.PLOTS)
        reporter.log_artifact(figure.with_suffix(".svg"), record.PLOTS)
