"""``deepauc predict``: test-time-augmented inference on out-of-fold and test images.

For each fold's ``model.pt`` it scores the fold's validation rows (out-of-fold) and the
test set, averaging sigmoid scores over ``tta.dihedral`` flips/rotations (stacked into
one batch, so a view costs one more forward pass at the same batch efficiency) and
``tta.n_random`` randomly augmented copies. Views are scored in blocks of 8, each saved
under ``preds/<name>/.parts/`` with the key it was made from, so a killed run resumes.
Outputs under ``preds/<name>/``: ``oof.csv``, ``test.csv`` (mean over folds) and
``test_folds.csv`` (see :mod:`deepauc.pipeline.pred_files`); and the same for the
un-augmented identity view under ``preds/<name>-notta/``, so the report can show what
TTA adds."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from deepauc.config import add_config_arguments, to_dict
from deepauc.data.augment import build_train_transform, dihedral_views
from deepauc.data.dataset import ImageAndCopies, to_device_batch
from deepauc.data.image_cache import check_cached
from deepauc.data.tables import read_folds_table, read_test_csv
from deepauc.io import atomic_path, ensure_writable, load_torch
from deepauc.metrics import roc_auc
from deepauc.models import create_model
from deepauc.pipeline.aux_targets import head_outputs, melanoma_model
from deepauc.pipeline.experiment import ExperimentConfig, TTAConfig, load_experiment
from deepauc.pipeline.pred_files import COMPETITION, write_pred_dir
from deepauc.pipeline.provenance import (
    cache_fingerprint,
    check_model_record,
    file_fingerprint,
    folds_of_table,
)
from deepauc.pipeline.runtime import amp_dtype, make_loader, pick_device

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
    model = create_model(cfg.model.backbone, pretrained=False, num_classes=head_outputs(cfg))
    model.load_state_dict(saved["model"])
    model.to(device).eval()
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    return melanoma_model(model, cfg)  # the melanoma score only, whatever the head


Block = tuple[int, int]
# views per saved block: block 0 holds every dihedral view (at most 8), so a killed run of
# 30 views loses at most one pass of 8 over the rows it was scoring
VIEWS_PER_BLOCK = 8
PARTS = ".parts"


@torch.no_grad()
def predict_block(
    model, table: pd.DataFrame, cfg: ExperimentConfig, device, block: Block, desc: str = "predict"
) -> tuple[np.ndarray, np.ndarray | None]:
    """(sum of the sigmoid scores over the views ``block``, identity-view score or None).

    Views are numbered dihedral first (``tta.dihedral`` of them), then the random copies;
    copy ``c`` is the augmentation of epoch 10 000 + c whichever block it falls in, so the
    blocks of a split run hold the views of one pass. Each image is decoded once per block
    and all its views of the block go through the network in one forward pass.
    """
    start, end = block
    n_dihedral = cfg.tta.dihedral if start == 0 else 0  # block 0 holds every dihedral view
    first_copy = max(start, cfg.tta.dihedral) - cfg.tta.dihedral
    n_copies = max(0, end - cfg.tta.dihedral - first_copy)
    amp = amp_dtype(cfg.train.amp, device)
    ds = ImageAndCopies(
        table,
        cfg.data.cache_dir,
        cfg.data.image_size,
        build_train_transform(cfg.augment) if n_copies else None,
        seed=cfg.train.seed,
        n_copies=n_copies,
        first_epoch=10_000 + first_copy,  # seeds apart from any training epoch
    )
    # images per batch such that one forward holds about tta.batch_size × dihedral views
    per_batch = max(1, cfg.tta.batch_size * cfg.tta.dihedral // (end - start))
    loader = make_loader(ds, per_batch, cfg.train.num_workers, shuffle=False)
    sums, plain = [], []
    batches = tqdm(
        loader, desc=desc, unit="batch", leave=False, mininterval=5, disable=progress_disabled()
    )
    for x, _ in batches:
        b = x.shape[0]
        x = to_device_batch(x.transpose(0, 1).flatten(0, 1), device, cfg.train.channels_last)
        views = x[b:]
        if n_dihedral:
            views = torch.cat([dihedral_views(x[:b], n_dihedral), views])  # view-major
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(views).float().view(end - start, b)
        probs = torch.sigmoid(logits)
        sums.append(probs.sum(0))
        plain.append(probs[0])
    total = torch.cat(sums).cpu().numpy().astype(np.float64) if sums else np.zeros(0)
    if not n_dihedral:
        return total, None
    return total, torch.cat(plain).cpu().numpy().astype(np.float64) if plain else np.zeros(0)


def view_blocks(tta: TTAConfig) -> list[Block]:
    """The view ranges ``[start, end)`` scored (and saved) one at a time."""
    total = tta.dihedral + tta.n_random
    return [(s, min(s + VIEWS_PER_BLOCK, total)) for s in range(0, total, VIEWS_PER_BLOCK)]


def add_blocks(
    cfg: ExperimentConfig, score_block: Callable[[Block], tuple[np.ndarray, np.ndarray | None]]
) -> tuple[np.ndarray, np.ndarray]:
    """(mean over all views, identity view) from the per-block sums ``score_block`` gives."""
    total: np.ndarray | None = None
    identity: np.ndarray | None = None
    for block in view_blocks(cfg.tta):
        sums, plain = score_block(block)
        total = sums if total is None else total + sums
        identity = plain if plain is not None else identity
    if total is None or identity is None:  # block 0 always exists: dihedral >= 1
        raise RuntimeError("internal error: no identity view block")
    return total / (cfg.tta.dihedral + cfg.tta.n_random), identity


def tta_predict(
    model, table: pd.DataFrame, cfg: ExperimentConfig, device, desc: str = "predict"
) -> tuple[np.ndarray, np.ndarray]:
    """(TTA score, identity-view score) per row of ``table``.

    The TTA score is the mean sigmoid over the dihedral views and the random copies,
    scored block by block (:func:`predict_block`); ``desc`` labels the progress bars.
    """
    return add_blocks(cfg, lambda block: predict_block(model, table, cfg, device, block, desc))


def names_fingerprint(names: Sequence[str]) -> str:
    """Hash of an ordered list of image names (the rows a block scored)."""
    return hashlib.sha256("\n".join(map(str, names)).encode()).hexdigest()[:16]


def read_part(path: Path, key: dict, n_rows: int) -> tuple[np.ndarray, np.ndarray | None] | None:
    """A saved block when its key is ``key`` (else None: redo it, never reuse it)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            if json.loads(str(saved["key"])) != key:
                return None
            sums = saved["sums"]
            plain = saved["identity"] if "identity" in saved.files else None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None  # damaged by a kill outside the atomic rename: redo it
    if sums.shape != (n_rows,) or (plain is not None and plain.shape != (n_rows,)):
        return None
    return sums, plain


def write_part(path: Path, key: dict, sums: np.ndarray, plain: np.ndarray | None) -> None:
    """Save one block atomically, with the key it was made from."""
    text = np.array(json.dumps(key, sort_keys=True))
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        if plain is None:
            np.savez(fh, key=text, sums=sums)
        else:
            np.savez(fh, key=text, sums=sums, identity=plain)


class FoldScorer:
    """Scores one fold's row sets block by block, reusing the saved blocks whose key matches.

    A block's key: the fold model file's fingerprint, the config fingerprint, the fold
    assignment, the TTA settings, the autocast dtype, the view block, the row names and the
    content stamps of their cached images.
    """

    def __init__(self, cfg: ExperimentConfig, fold: int, device, folds: str, parts: Path) -> None:
        self.cfg, self.fold, self.device, self.parts = cfg, fold, device, parts
        self.model = load_fold_model(cfg, fold, device, folds)
        self.base = {
            "model": file_fingerprint(cfg.run_dir(fold) / "model.pt"),
            "config": cfg.fingerprint(),
            "folds": folds,
            "tta": to_dict(cfg.tta),
            "amp": str(amp_dtype(cfg.train.amp, device)),
        }
        self.written: list[Path] = []

    def scores(self, rows: pd.DataFrame, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """(TTA, identity) scores of ``rows`` (``kind``: oof or test)."""
        names = names_fingerprint(list(rows["image_name"]))
        # the cached pixels' content: a re-cached image under an old name is scored again
        images = cache_fingerprint(
            self.cfg.data.cache_dir, self.cfg.data.image_size, rows["image_name"]
        )
        reused = 0

        def score_block(block: Block) -> tuple[np.ndarray, np.ndarray | None]:
            nonlocal reused
            key = {**self.base, "rows": names, "images": images, "views": list(block)}
            path = self.parts / f"fold{self.fold}_{kind}_views{block[0]}-{block[1]}.npz"
            self.written.append(path)
            saved = read_part(path, key, len(rows))
            if saved is not None:
                reused += 1
                return saved
            desc = f"fold {self.fold} {kind} views {block[0]}-{block[1] - 1}"
            sums, plain = predict_block(self.model, rows, self.cfg, self.device, block, desc)
            write_part(path, key, sums, plain)
            return sums, plain

        result = add_blocks(self.cfg, score_block)
        if reused:
            n = len(view_blocks(self.cfg.tta))
            log.info(
                "%s fold %d %s: %d of %d view blocks reused",
                self.cfg.name,
                self.fold,
                kind,
                reused,
                n,
            )
        return result


def predict_experiment(cfg: ExperimentConfig, device: torch.device | None = None) -> Path:
    """Score every fold's OOF rows and the test set; write the prediction directories.

    Resumable: each block of views is saved under ``<out>/.parts`` as it is scored, and a
    rerun reuses the blocks whose key matches (see :class:`FoldScorer`). The outputs are
    written ``-notta`` first and ``<out>/oof.csv`` (make's target) last.
    """
    device = device or pick_device()
    table = read_folds_table(cfg.data.train_csv, ["image_name", "target", "fold"], cfg.n_folds)
    folds = folds_of_table(cfg.data.train_csv)
    test = read_test_csv(cfg.data.test_csv) if cfg.data.test_csv else None
    if test is not None:  # fail before the first fold, not after it
        check_cached(
            list(test["image_name"]), cfg.data.cache_dir, cfg.data.image_size, cfg.data.test_csv
        )
    out = Path(cfg.preds_dir) / cfg.name
    notta = Path(f"{out}-notta")
    for directory in (out, notta, out / PARTS):  # fail before the computing, not after it
        ensure_writable(directory)
    for directory in (out, notta):  # a run under way is not a finished directory
        (directory / "oof.csv").unlink(missing_ok=True)
    oof_parts, plain_parts, test_cols, test_plain = [], [], {}, {}
    fold_ids, written = cfg.fold_ids(), []
    with tqdm(
        total=len(fold_ids), desc=f"{cfg.name} folds", unit="fold", disable=progress_disabled()
    ) as bar:
        for fold in fold_ids:
            scorer = FoldScorer(cfg, fold, device, folds, out / PARTS)
            valid = table[table["fold"] == fold]
            cols = ["image_name", "fold", "target"] + (["source"] if "source" in valid else [])
            tta, plain = scorer.scores(valid, "oof")
            oof_parts.append(valid[cols].assign(pred=tta))
            plain_parts.append(valid[cols].assign(pred=plain))
            log.info(
                "%s fold %d: OOF AUC %.4f (TTA) %.4f (no TTA)",
                cfg.name,
                fold,
                roc_auc(valid["target"].to_numpy(), tta, undefined="nan"),
                roc_auc(valid["target"].to_numpy(), plain, undefined="nan"),
            )
            if test is not None:
                test_cols[f"fold{fold}"], test_plain[f"fold{fold}"] = scorer.scores(test, "test")
            written += scorer.written
            bar.update(1)
    record = prediction_record(cfg, folds)
    for directory, parts, tests in [(notta, plain_parts, test_plain), (out, oof_parts, test_cols)]:
        write_predictions(directory, pd.concat(parts, ignore_index=True), test, tests, record)
    prune_parts(out / PARTS, written)
    return out


def prune_parts(parts: Path, keep: list[Path]) -> None:
    """Remove saved blocks this run did not use (another TTA setting or fold set)."""
    for path in parts.glob("*.npz"):
        if path not in keep:
            path.unlink(missing_ok=True)


def prediction_record(cfg: ExperimentConfig, folds: str) -> dict:
    """The provenance of a prediction directory: OOF rows of fold k were scored by ``models[k]``.

    ``models[k]["sha256"]`` is the fingerprint of the model file's bytes.
    """
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


def run(args) -> int:
    cfg = load_experiment(args.config, args.overrides)
    out = predict_experiment(cfg)
    print(f"{cfg.name}: predictions in {out} and {out}-notta")
    return 0
