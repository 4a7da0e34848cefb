"""``deepauc predict``: test-time-augmented inference on out-of-fold and test images.

For each fold's ``model.pt`` it scores the fold's validation rows (out-of-fold) and the
test set, averaging sigmoid scores over ``tta.dihedral`` flips/rotations (stacked into
one batch, so a view costs one more forward pass at the same batch efficiency) and
``tta.n_random`` randomly augmented copies. Outputs under ``preds/<name>/``:
``oof.csv``, ``test.csv`` (mean over folds) and ``test_folds.csv`` (see
:mod:`deepauc.pipeline.pred_files`); and the same for the un-augmented identity view
under ``preds/<name>-notta/``, so the report can show what TTA adds.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from deepauc.config import add_config_arguments
from deepauc.data.augment import build_train_transform, dihedral_views
from deepauc.data.dataset import ImageAndCopies, to_device_batch
from deepauc.data.resize import check_cached
from deepauc.data.tables import read_test_csv
from deepauc.io import ensure_writable, load_torch
from deepauc.models import create_model
from deepauc.pipeline.experiment import ExperimentConfig, load_experiment
from deepauc.pipeline.pred_files import COMPETITION, write_pred_dir
from deepauc.pipeline.runtime import amp_dtype, make_loader, pick_device, safe_auc
from deepauc.provenance import check_model_record, file_fingerprint, folds_of_table

log = logging.getLogger("deepauc.pipeline.predict")


def progress_disabled() -> bool:
    """Progress bars are off when ``DEEPAUC_PROGRESS=0`` (tests, logs)."""
    return os.environ.get("DEEPAUC_PROGRESS", "1") == "0"


def load_fold_model(
    cfg: ExperimentConfig, fold: int, device: torch.device, folds: str | None = None
) -> torch.nn.Module:
    """The trained network of ``fold``, in eval mode on ``device``.

    Refused unless it was trained with the current config and, when ``folds`` (the
    training table's fold fingerprint) is given, under the current fold assignment.
    """
    path = cfg.run_dir(fold) / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"no trained model for fold {fold}: {path} (run `deepauc train` first)"
        )
    saved = load_torch(path)
    expected = {"fingerprint": cfg.fingerprint(), "folds": folds}
    if folds is None:
        expected["folds"] = (saved.get("provenance") or {}).get("folds")
    check_model_record(saved, path, expected, cfg.data.train_csv, str(path.parent.parent))
    model = create_model(cfg.model.backbone, pretrained=False)
    model.load_state_dict(saved["model"])
    model.to(device).eval()
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


@torch.no_grad()
def tta_predict(
    model, table: pd.DataFrame, cfg: ExperimentConfig, device, desc: str = "predict"
) -> tuple[np.ndarray, np.ndarray]:
    """(TTA score, identity-view score) per row of ``table``.

    The TTA score is the mean sigmoid over the dihedral views and the random copies; each
    image is decoded once and all its views go through the network in one forward pass.
    ``desc`` labels the progress bar over batches.
    """
    amp = amp_dtype(cfg.train.amp, device)
    n_views, n_random = cfg.tta.dihedral, cfg.tta.n_random
    ds = ImageAndCopies(
        table,
        cfg.data.cache_dir,
        cfg.data.image_size,
        build_train_transform(cfg.augment) if n_random else None,
        seed=cfg.train.seed,
        n_copies=n_random,
        first_epoch=10_000,  # seeds apart from any training epoch
    )
    # images per batch such that one forward holds about tta.batch_size × dihedral views
    per_batch = max(1, cfg.tta.batch_size * n_views // (n_views + n_random))
    loader = make_loader(ds, per_batch, cfg.train.num_workers, shuffle=False)
    sums, plain = [], []
    batches = tqdm(
        loader, desc=desc, unit="batch", leave=False, mininterval=5, disable=progress_disabled()
    )
    for x, _ in batches:
        b = x.shape[0]
        x = to_device_batch(x.transpose(0, 1).flatten(0, 1), device, cfg.train.channels_last)
        views = torch.cat([dihedral_views(x[:b], n_views), x[b:]])  # view-major
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(views).float().view(n_views + n_random, b)
        probs = torch.sigmoid(logits)
        sums.append(probs.sum(0))
        plain.append(probs[0])
    total = torch.cat(sums).cpu().numpy().astype(np.float64) if sums else np.zeros(0)
    identity = torch.cat(plain).cpu().numpy().astype(np.float64) if plain else np.zeros(0)
    return total / (n_views + cfg.tta.n_random), identity


def predict_experiment(cfg: ExperimentConfig, device: torch.device | None = None) -> Path:
    """Score every fold's OOF rows and the test set; write the prediction directories."""
    device = device or pick_device()
    table = pd.read_csv(cfg.data.train_csv)
    folds = folds_of_table(cfg.data.train_csv)
    test = read_test_csv(cfg.data.test_csv) if cfg.data.test_csv else None
    if test is not None:  # fail before the first fold, not after it
        check_cached(
            list(test["image_name"]), cfg.data.cache_dir, cfg.data.image_size, cfg.data.test_csv
        )
    out = Path(cfg.preds_dir) / cfg.name
    for directory in (out, Path(f"{out}-notta")):  # fail before the computing, not after it
        ensure_writable(directory)
    oof_parts, plain_parts, test_cols, test_plain = [], [], {}, {}
    fold_ids = cfg.fold_ids()
    with tqdm(
        total=len(fold_ids), desc=f"{cfg.name} folds", unit="fold", disable=progress_disabled()
    ) as bar:
        for fold in fold_ids:
            model = load_fold_model(cfg, fold, device, folds)
            valid = table[table["fold"] == fold]
            cols = ["image_name", "fold", "target"] + (["source"] if "source" in valid else [])
            tta, plain = tta_predict(model, valid, cfg, device, f"fold {fold} OOF")
            oof_parts.append(valid[cols].assign(pred=tta))
            plain_parts.append(valid[cols].assign(pred=plain))
            log.info(
                "%s fold %d: OOF AUC %.4f (TTA) %.4f (no TTA)",
                cfg.name,
                fold,
                safe_auc(valid["target"].to_numpy(), tta),
                safe_auc(valid["target"].to_numpy(), plain),
            )
            if test is not None:
                test_cols[f"fold{fold}"], test_plain[f"fold{fold}"] = tta_predict(
                    model, test, cfg, device, f"fold {fold} test"
                )
            bar.update(1)
    record = prediction_record(cfg, folds)
    for directory, parts, tests in [
        (out, oof_parts, test_cols),
        (Path(f"{out}-notta"), plain_parts, test_plain),
    ]:
        write_predictions(directory, pd.concat(parts, ignore_index=True), test, tests, record)
    return out


def prediction_record(cfg: ExperimentConfig, folds: str) -> dict:
    """The provenance of a prediction directory: OOF rows of fold k were scored by ``models[k]``."""
    models = {}
    for fold in cfg.fold_ids():
        path = cfg.run_dir(fold) / "model.pt"
        models[str(fold)] = {"path": str(path), "sha256": file_fingerprint(path)}
    return {"folds": folds, "config": cfg.fingerprint(), "models": models}


def write_predictions(
    directory: Path,
    oof: pd.DataFrame,
    test: pd.DataFrame | None,
    fold_preds: dict,
    provenance: dict | None = None,
) -> None:
    """Write one prediction directory (see :mod:`deepauc.pipeline.pred_files`); test = mean over folds."""
    if "source" not in oof:
        oof = oof.assign(source=COMPETITION)
    folds = mean = None
    if test is not None:
        folds = pd.DataFrame({"image_name": test["image_name"].to_numpy(), **fold_preds})
        mean = pd.DataFrame(
            {
                "image_name": folds["image_name"],
                "pred": folds.drop(columns="image_name").mean(axis=1),
            }
        )
    write_pred_dir(directory, oof, mean, folds, provenance)


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args) -> int:
    cfg = load_experiment(args.config, args.overrides)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = predict_experiment(cfg)
    print(f"{cfg.name}: predictions in {out} and {out}-notta")
    return 0
