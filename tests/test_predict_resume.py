"""predict resumes per fold and per view block: a killed run continues where it stopped and
ends with the files of an uninterrupted run; a block made from other inputs is redone."""

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from deepauc.io import load_torch, save_torch
from deepauc.pipeline import pred_files, predict
from deepauc.pipeline.experiment import load_experiment
from deepauc.pipeline.predict import predict_experiment
from deepauc.pipeline.train import train_fold
from helpers import cpu_subprocess_env, write_experiment

CPU = torch.device("cpu")
FILES = ["oof.csv", "test.csv", "test_folds.csv"]
# 4 dihedral + 6 random views: blocks (0, 8) and (8, 10); 2 folds x (oof, test) x 2 = 8 blocks
TTA = {"dihedral": 4, "n_random": 6, "batch_size": 8}
N_BLOCKS = 8


@pytest.fixture
def trained(tiny_data):
    """A two-fold experiment whose models are trained; its config path and config."""
    path = write_experiment(tiny_data, "ce", folds=[0, 1], tta=TTA)
    cfg = load_experiment(path)
    for fold in cfg.fold_ids():
        train_fold(cfg, fold, CPU)
    return path, cfg


def outputs(cfg) -> dict[str, bytes]:
    out = Path(cfg.preds_dir) / cfg.name
    return {
        f"{d.name}/{f}": (d / f).read_bytes() for d in (out, Path(f"{out}-notta")) for f in FILES
    }


def count_blocks(monkeypatch) -> list:
    """Record every block scored by the network (reused blocks are not)."""
    calls: list = []
    real = predict.predict_block

    def spy(model, table, cfg, device, block, desc="predict"):
        calls.append((desc, block))
        return real(model, table, cfg, device, block, desc)

    monkeypatch.setattr(predict, "predict_block", spy)
    return calls


def uninterrupted(cfg) -> dict[str, bytes]:
    """The files of one uninterrupted run; the prediction folders are then removed."""
    predict_experiment(cfg, CPU)
    files = outputs(cfg)
    shutil.rmtree(cfg.preds_dir)
    return files


@pytest.mark.parametrize("stop_after", [1, 5])
def test_exception_after_block_k_resumes_to_the_same_files(trained, monkeypatch, stop_after):
    _, cfg = trained
    expected = uninterrupted(cfg)
    real_write, saved = predict.write_part, []

    def failing_write(path, *args):
        real_write(path, *args)
        saved.append(path)
        if len(saved) == stop_after:
            raise KeyboardInterrupt  # what Ctrl-C raises between two blocks

    monkeypatch.setattr(predict, "write_part", failing_write)
    with pytest.raises(KeyboardInterrupt):
        predict_experiment(cfg, CPU)
    out = Path(cfg.preds_dir) / cfg.name
    assert not (out / "oof.csv").exists()
    assert len(list((out / ".parts").glob("*.npz"))) == stop_after

    monkeypatch.setattr(predict, "write_part", real_write)
    calls = count_blocks(monkeypatch)
    predict_experiment(cfg, CPU)
    assert len(calls) == N_BLOCKS - stop_after  # the finished blocks were not scored again
    assert outputs(cfg) == expected


def test_sigkill_mid_run_resumes_to_the_same_files(trained, monkeypatch):
    path, cfg = trained
    expected = uninterrupted(cfg)
    # a real SIGKILL, sent by the process to itself right after its third saved block
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from deepauc import cli
        from deepauc.pipeline import predict
        real, n = predict.write_part, []
        def write(*args):
            real(*args)
            n.append(1)
            if len(n) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        predict.write_part = write
        sys.exit(cli.main(["predict", "--config", {str(path)!r}]))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], env=cpu_subprocess_env(), capture_output=True, text=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    out = Path(cfg.preds_dir) / cfg.name
    assert not (out / "oof.csv").exists()
    assert len(list((out / ".parts").glob("*.npz"))) == 3

    calls = count_blocks(monkeypatch)
    predict_experiment(cfg, CPU)
    assert len(calls) == N_BLOCKS - 3
    assert outputs(cfg) == expected


def test_changed_model_file_redoes_only_its_blocks(trained, monkeypatch):
    _, cfg = trained
    predict_experiment(cfg, CPU)
    before = outputs(cfg)
    model_path = cfg.run_dir(1) / "model.pt"
    saved = load_torch(model_path)  # same record, other weights: passes every record check
    saved["model"] = {
        k: v + 0.01 if v.is_floating_point() else v for k, v in saved["model"].items()
    }
    save_torch(saved, model_path)

    calls = count_blocks(monkeypatch)
    out = predict_experiment(cfg, CPU)
    assert (
        sorted(desc.split(" views")[0] for desc, _ in calls)
        == ["fold 1 oof"] * 2 + ["fold 1 test"] * 2
    )
    after = outputs(cfg)
    assert after["ce/oof.csv"] != before["ce/oof.csv"]
    record = json.loads((out / "provenance.json").read_text())
    assert (
        record["models"]["1"]["sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()[:16]
    )
    # an unchanged rerun scores nothing
    calls.clear()
    predict_experiment(cfg, CPU)
    assert calls == [] and outputs(cfg) == after


def test_block_with_another_key_or_damaged_is_redone(trained, monkeypatch):
    _, cfg = trained
    expected = uninterrupted(cfg)
    predict_experiment(cfg, CPU)
    parts = sorted((Path(cfg.preds_dir) / cfg.name / ".parts").glob("*.npz"))
    assert len(parts) == N_BLOCKS
    parts[0].write_bytes(b"truncated")
    other = dict(**predict.np.load(parts[1]))  # another key: the rows of another list
    other["key"] = predict.np.array(json.dumps({"rows": "elsewhere"}))
    with open(parts[1], "wb") as fh:
        predict.np.savez(fh, **other)
    calls = count_blocks(monkeypatch)
    predict_experiment(cfg, CPU)
    assert len(calls) == 2 and outputs(cfg) == expected


def test_oof_written_last_and_absent_when_the_last_write_fails(trained, monkeypatch):
    _, cfg = trained
    out = predict_experiment(cfg, CPU)
    notta = Path(f"{out}-notta")
    others = [p for d in (out, notta) for p in d.iterdir() if p.is_file() and p != out / "oof.csv"]
    assert len(others) == 7  # 3 csv + provenance, twice, less the target
    newest_other = max(p.stat().st_mtime_ns for p in others)
    assert (out / "oof.csv").stat().st_mtime_ns >= newest_other
    stale_notta = (notta / "oof.csv").stat().st_mtime_ns

    real = pred_files.write_csv

    def fail_on_target(df, path, **kwargs):
        if Path(path) == out / "oof.csv":
            raise OSError("disk full")
        return real(df, path, **kwargs)

    monkeypatch.setattr(pred_files, "write_csv", fail_on_target)
    with pytest.raises(OSError, match="disk full"):
        predict_experiment(cfg, CPU)
    assert not (out / "oof.csv").exists()  # make sees an unfinished target, not the old one
    assert (notta / "oof.csv").stat().st_mtime_ns > stale_notta  # -notta was written first


def test_a_recached_test_image_is_scored_again(trained, tiny_data, monkeypatch):
    """Same names, other pixels: resize's record of the test table changes, and only the
    test blocks are redone (block keys hold the cached images' content stamps)."""
    import pandas as pd

    _, cfg = trained
    size_dir = Path(cfg.data.cache_dir) / str(cfg.data.image_size)
    names = list(pd.read_csv(tiny_data["test_csv"], dtype=str)["image_name"])

    def record(digests: list[str]) -> None:  # what `deepauc resize` writes beside the cache
        rows = {"image_name": names, "source": names, "source_sha256": digests}
        pd.DataFrame(rows).to_csv(size_dir / "sources_test.csv", index=False)

    record(["a" * 64] * len(names))
    predict_experiment(cfg, CPU)
    before = outputs(cfg)
    first, second = size_dir / f"{names[0]}.jpg", size_dir / f"{names[1]}.jpg"
    first.write_bytes(second.read_bytes())  # the first test name now holds another image
    record(["b" * 64] + ["a" * 64] * (len(names) - 1))
    calls = count_blocks(monkeypatch)
    predict_experiment(cfg, CPU)
    assert sorted({desc.split(" views")[0] for desc, _ in calls}) == ["fold 0 test", "fold 1 test"]
    after = outputs(cfg)
    assert after["ce/test.csv"] != before["ce/test.csv"]
    assert after["ce/oof.csv"] == before["ce/oof.csv"]
