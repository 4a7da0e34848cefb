"""Bad input as a user meets it: the ``deepauc`` command's exit code and its one-line error.

Each case runs the stage a user would run (``deepauc folds``, ``resize``, ``external``,
``train``) through :func:`deepauc.cli.main` and checks the message names the file, the
line (or row) and the field, and that no output a later ``make`` would take as finished
was written. The value checks themselves are unit-tested in test_tables.py,
test_external.py, test_resize.py and test_folds.py; docs/when-things-go-wrong.md lists
what each message means.
"""

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from deepauc.cli import main
from deepauc.data.tables import read_test_csv
from deepauc.pipeline.runtime import EpochShard
from helpers import SIZE, write_experiment

HEADER = "image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,target"
ROWS = [
    "ISIC_0000001,IP_0000001,male,45.0,torso,unknown,benign,0",
    "ISIC_0000002,IP_0000001,male,,head/neck,melanoma,malignant,1",
    "ISIC_0000003,IP_0000002,,50.0,,nevus,benign,0",
]


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------- tables
@pytest.mark.parametrize(
    "header, row, expected",
    [
        (
            HEADER.replace(",target", ",taget"),
            "ISIC_0000009,IP_3,male,45,torso,unknown,benign,0",
            ["missing column(s) 'target' (found 'taget'; misspelt?)"],
        ),
        (
            HEADER.replace("patient_id,", ""),
            "ISIC_0000009,male,45,torso,unknown,benign,0",
            ["missing column(s) 'patient_id'"],
        ),
        (
            HEADER,
            "ISIC_0000009,IP_3,male,45,torso,unknown,benign,2",
            ["column 'target' must be 0 or 1", "line 5 (ISIC_0000009): 2"],
        ),
        (
            HEADER,
            "ISIC_0000001,IP_3,male,45,torso,unknown,benign,0",
            ["duplicated image_name: ISIC_0000001 (lines 2, 5)"],
        ),
        (
            HEADER,
            "ISIC_0000009,,male,45,torso,unknown,benign,0",
            ["empty patient_id at line 5 (ISIC_0000009)"],
        ),
        (
            HEADER,
            "ISIC_0000009,IP_3,male,-5,torso,unknown,benign,0",
            ["age_approx outside [0, 120] at line 5 (ISIC_0000009): -5.0"],
        ),
        (
            HEADER,
            "ISIC_0000009,IP_3,male,300,torso,unknown,benign,0",
            ["age_approx outside [0, 120] at line 5 (ISIC_0000009): 300.0"],
        ),
        (
            HEADER,
            "ISIC_0000009,IP_3,male,NA,torso,unknown,benign,0",
            ["column 'age_approx' is not numeric at line 5 (ISIC_0000009): 'NA'"],
        ),
        (
            HEADER,
            "ISIC_0000009,IP_3,M,45,torso,unknown,benign,0",
            [
                "unknown value in column 'sex' at line 5 (ISIC_0000009): 'M'",
                "allowed: ['male', 'female']",
            ],
        ),
        (
            HEADER,
            "ISIC_0000009,IP_3,male,45,chest,unknown,benign,0",
            [
                "unknown value in column 'anatom_site_general_challenge' at line 5 (ISIC_0000009): 'chest'"
            ],
        ),
    ],
    ids=[
        "misspelt-column",
        "missing-column",
        "unknown-target",
        "duplicate-name",
        "no-patient-id",
        "age-minus-5",
        "age-300",
        "age-not-a-number",
        "unknown-sex",
        "unknown-site",
    ],
)
def test_folds_stage_names_file_line_and_field(tmp_path, capsys, header, row, expected):
    src = tmp_path / "train.csv"
    if header != HEADER:  # re-shape the good rows to the header's columns
        keep = [HEADER.split(",").index(c) for c in header.replace("taget", "target").split(",")]
        rows = [",".join(r.split(",")[i] for i in keep) for r in ROWS]
    else:
        rows = ROWS
    src.write_text("\n".join([header, *rows, row]) + "\n")
    out = tmp_path / "folds.csv"
    code, _, err = run_cli(capsys, "folds", "--train-csv", src, "--out", out, "--n-folds", "2")
    assert code == 1
    assert err.startswith(f"deepauc folds: error: {src}: ")
    for text in expected:
        assert text in err, err
    assert not out.exists()


def test_folds_stage_refuses_a_fold_without_a_positive(tmp_path, capsys):
    rows = [
        f"ISIC_{i:07d},IP_{i // 2},male,45,torso,unknown,{'malignant' if i == 0 else 'benign'},{int(i == 0)}"
        for i in range(20)
    ]
    src = tmp_path / "train.csv"
    src.write_text("\n".join([HEADER, *rows]) + "\n")
    code, _, err = run_cli(
        capsys, "folds", "--train-csv", src, "--out", tmp_path / "f.csv", "--n-folds", "3"
    )
    assert code == 1
    assert (
        f"{src}: fold(s) [" in err
        and "would get no malignant image" in err
        and "--n-folds 2" in err
    )


def test_empty_test_set_stops_the_first_stage_that_reads_it(tmp_path, capsys):
    test_csv = tmp_path / "test.csv"
    test_csv.write_text("image_name,patient_id,sex,age_approx,anatom_site_general_challenge\n")
    with pytest.raises(ValueError, match="test.csv: no data rows"):
        read_test_csv(test_csv)
    code, _, err = run_cli(
        capsys,
        "resize",
        "--csv",
        test_csv,
        "--image-root",
        tmp_path,
        "--size",
        16,
        "--out",
        tmp_path / "cache",
        "--workers",
        1,
    )
    assert code == 1 and f"{test_csv}: no data rows" in err
    assert not (tmp_path / "cache" / "16" / "index_test.csv").exists()


def _jpeg(path, seed, shape=(16, 16, 3), ext=".jpg"):
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(ext, np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8))
    path.write_bytes(buf.tobytes())
    return path


@pytest.mark.parametrize("labels, n_set", [(["MEL", "NV"], 2), ([], 0)])
def test_isic2019_one_hot_row_not_summing_to_one(tmp_path, capsys, labels, n_set):
    classes = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    root = tmp_path / "raw"
    root.mkdir()
    (root / "train.csv").write_text("\n".join([HEADER, ROWS[0]]) + "\n")
    _jpeg(root / "jpeg" / "train" / "ISIC_0000001.jpg", 0)
    d19 = tmp_path / "isic2019"
    d19.mkdir()
    onehot = [[int(c == "NV") for c in classes], [int(c in labels) for c in classes]]
    gt = pd.DataFrame(onehot, columns=classes).astype(float)
    gt.insert(0, "image", ["ISIC_0100001", "ISIC_0100002"])
    gt.to_csv(d19 / "ISIC_2019_Training_GroundTruth.csv", index=False)
    pd.DataFrame(
        {
            "image": ["ISIC_0100001", "ISIC_0100002"],
            "age_approx": [40.0, 50.0],
            "anatom_site_general": ["anterior torso", "head/neck"],
            "lesion_id": ["", ""],
            "sex": ["male", "female"],
        }
    ).to_csv(d19 / "ISIC_2019_Training_Metadata.csv", index=False)
    for i in (1, 2):
        _jpeg(d19 / f"ISIC_010000{i}.jpg", i)
    out = tmp_path / "train_ext.csv"
    code, _, err = run_cli(
        capsys, "external", "--train-csv", root / "train.csv", "--isic2019-dir", d19, "--out", out
    )
    assert code == 1
    assert (
        "ISIC_2019_Training_GroundTruth.csv: a one-hot row must have exactly one label set" in err
    )
    assert f"line 3 (ISIC_0100002): {n_set}" in err
    assert not out.exists()


# ---------------------------------------------------------------------------- images
@pytest.fixture
def sources(tmp_path):
    """8 source JPEGs and their table."""
    root = tmp_path / "img"
    names = [f"ISIC_00000{i:02d}" for i in range(8)]
    for i, name in enumerate(names):
        _jpeg(root / f"{name}.jpg", i, (24, 30, 3))
    csv = tmp_path / "t.csv"
    pd.DataFrame({"image_name": names}).to_csv(csv, index=False)
    return root, csv, names


def _resize(capsys, root, csv, cache):
    return run_cli(
        capsys,
        "resize",
        "--csv",
        csv,
        "--image-root",
        root,
        "--size",
        16,
        "--out",
        cache,
        "--workers",
        1,
    )


def test_missing_images_listed_first_few_and_count_before_any_work(tmp_path, capsys, sources):
    root, csv, names = sources
    for name in names[1:]:
        (root / f"{name}.jpg").unlink()
    cache = tmp_path / "cache"
    code, _, err = _resize(capsys, root, csv, cache)
    assert code == 1
    assert f"{csv}: 7 of 8 source image(s) missing" in err
    assert str(root / f"{names[1]}.jpg") in err and "and 2 more" in err
    assert not (cache / "16").exists() or not any((cache / "16").iterdir())  # nothing done


@pytest.mark.parametrize(
    "kind, words",
    [
        ("zero-byte", "empty file (0 bytes)"),
        ("truncated", "truncated JPEG (no end-of-image marker)"),
        ("corrupt", "cannot decode image"),
    ],
)
def test_unreadable_image_stops_naming_it(tmp_path, capsys, sources, kind, words):
    root, csv, names = sources
    bad = root / f"{names[3]}.jpg"
    content = bad.read_bytes()
    bad.write_bytes(
        {
            "zero-byte": b"",
            "truncated": content[: len(content) // 2],
            "corrupt": b"\xff\xd8" + bytes(range(256)) * 4 + b"\xff\xd9",
        }[kind]
    )
    cache = tmp_path / "cache"
    code, _, err = _resize(capsys, root, csv, cache)
    assert code == 1
    assert "1 image(s) could not be read" in err and f"{bad}: {words}" in err
    assert not (cache / "16" / "index_t.csv").exists()  # the stage's make target
    assert (cache / "16" / f"{names[0]}.jpg").is_file()  # the good ones are kept for the rerun


def test_png_and_grayscale_sources_are_converted_and_reported(tmp_path, capsys, sources):
    root, csv, names = sources
    _jpeg(root / f"{names[2]}.jpg", 2, (24, 30, 3), ext=".png")  # PNG content behind .jpg
    _jpeg(root / f"{names[5]}.jpg", 5, (24, 30))  # grayscale JPEG
    cache = tmp_path / "cache"
    code, out, _ = _resize(capsys, root, csv, cache)
    assert code == 0
    assert "note: 2 source image(s) were not RGB JPEGs and were converted to RGB" in out
    assert (
        f"{root / names[2]}.jpg (PNG)" in out and f"{root / names[5]}.jpg (grayscale JPEG)" in out
    )
    for name in (names[2], names[5]):
        img = cv2.imread(str(cache / "16" / f"{name}.jpg"), cv2.IMREAD_UNCHANGED)
        assert img.shape == (16, 16, 3)
    assert (cache / "16" / "index_t.csv").is_file()


# ---------------------------------------------------------------------------- training
def _train(capsys, path):
    return run_cli(capsys, "train", "--config", path)


def test_train_table_without_fold_column_or_with_bad_target(tiny_data, capsys):
    table = pd.read_csv(tiny_data["train_csv"])
    table.drop(columns="fold").to_csv(tiny_data["train_csv"], index=False)
    code, _, err = _train(capsys, write_experiment(tiny_data, "nofold", folds=[0]))
    assert code == 1 and f"{tiny_data['train_csv']}: missing column(s) 'fold'" in err
    table.loc[5, "target"] = 3
    table.to_csv(tiny_data["train_csv"], index=False)
    code, _, err = _train(capsys, write_experiment(tiny_data, "badtarget", folds=[0]))
    assert code == 1 and "column 'target' must be 0 or 1, bad at line 7 (ISIC_0000005): 3" in err


def test_validation_fold_without_a_positive_is_refused_before_training(tiny_data, capsys):
    table = pd.read_csv(tiny_data["train_csv"])
    table.loc[table["fold"] == 0, "target"] = 0
    table.to_csv(tiny_data["train_csv"], index=False)
    path = write_experiment(tiny_data, "nopos", folds=[0])
    code, _, err = _train(capsys, path)
    assert code == 1
    assert f"{tiny_data['train_csv']}: fold 0: its 16 validation rows hold only target 0" in err
    assert "AUC is undefined" in err
    assert not (tiny_data["root"] / "models" / "nopos" / "fold0" / "model.pt").exists()


def test_images_missing_from_the_cache_listed_before_training(tiny_data, capsys):
    table = pd.read_csv(tiny_data["train_csv"])
    gone = list(table["image_name"][table["fold"] != 0][:7])
    for name in gone:
        (tiny_data["cache"] / str(SIZE) / f"{name}.jpg").unlink()
    code, _, err = _train(capsys, write_experiment(tiny_data, "nocache", folds=[0]))
    assert code == 1
    assert "7 of 48 image(s) not cached at 32 px" in err
    assert ", ".join(gone[:5]) + " and 2 more" in err and "deepauc resize" in err
    run_dir = tiny_data["root"] / "models" / "nocache" / "fold0"
    assert not (run_dir / "model.pt").exists() and not (run_dir / "checkpoint.pt").exists()


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(
    tiny_data, capsys, monkeypatch
):
    import deepauc.pipeline.train as train_mod

    real_build = train_mod.create_loss
    bad_call = 4  # 0-based: epoch 1 is steps 0-2, so step 4 is epoch 2's second step

    def build_loss_turning_nan(name, **kwargs):
        loss = real_build(name, **kwargs)
        forward, calls = loss.forward, []

        def nan_at_step(*args):
            calls.append(1)
            value = forward(*args)
            return value * float("nan") if len(calls) == bad_call + 1 else value

        loss.forward = nan_at_step
        return loss

    monkeypatch.setattr(train_mod, "create_loss", build_loss_turning_nan)
    path = write_experiment(tiny_data, "nan", folds=[0], schedule={"epochs": 3})
    code, _, err = _train(capsys, path)
    run_dir = tiny_data["root"] / "models" / "nan" / "fold0"
    assert code == 1
    assert "training loss became non-finite at step 5 (epoch 2, step 2 of 3)" in err
    assert f"the last good checkpoint {run_dir / 'checkpoint.pt'} (end of epoch 1) is kept" in err
    assert not (run_dir / "model.pt").exists()
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert len(pd.read_csv(run_dir / "log.csv")) == 1


@pytest.mark.parametrize("loss", ["auc_m", "auc_s"])
def test_batches_without_a_positive_train_finite(tiny_data, loss):
    from deepauc.pipeline.experiment import load_experiment
    from deepauc.pipeline.train import split_fold, train_fold

    table = pd.read_csv(tiny_data["train_csv"])
    table["target"] = (
        table["image_name"].isin(["ISIC_0000000", "ISIC_0000004", "ISIC_0000008"]).astype(int)
    )
    table.to_csv(tiny_data["train_csv"], index=False)  # fold 0 validates 0; trains on 4 and 8
    cfg = load_experiment(
        write_experiment(
            tiny_data,
            f"fewpos_{loss}",
            folds=[0],
            loss={"name": loss},
            optim={"name": "pesg", "lr": 0.1},
            schedule={"epochs": 1},
            train={"batch_size": 4, "max_steps_per_epoch": 0},
        )
    )
    train_df, _ = split_fold(table, 0, True)
    y = train_df["target"].to_numpy()
    steps = len(train_df) // 4
    empty = sum(
        y[list(EpochShard(len(y), cfg.train.seed * 1000, e))[j * 4 : (j + 1) * 4]].sum() == 0
        for e in range(1)
        for j in range(steps)
    )
    assert empty >= steps // 2  # most batches hold no positive
    path = train_fold(cfg, 0, torch.device("cpu"))
    log = pd.read_csv(path.parent / "log.csv")
    assert np.isfinite(log[["train_loss", "a", "b", "alpha"]].to_numpy()).all()
    weights = torch.load(path, weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


@pytest.mark.parametrize(
    "section, value, key",
    [
        ("train", {"batchsize": 8}, "unknown key(s) ['train.batchsize']"),
        ("optim", {"lr": "fast"}, "optim.lr: expected a number, got str 'fast'"),
        ("optim", {"lr": -0.1}, "optim.lr must be > 0, got -0.1"),
        ("loss", {"margin": 0}, "loss.margin must be > 0"),
        ("loss", {"imratio": 1.5}, "loss.imratio must lie in (0, 1)"),
        ("model", {"backbone": "efficientnet_b99"}, "unknown backbone 'efficientnet_b99'"),
    ],
)
def test_bad_config_refused_by_the_command_before_any_work(tiny_data, capsys, section, value, key):
    path = write_experiment(tiny_data, "badcfg", **{section: value})
    code, _, err = _train(capsys, path)
    assert code == 1
    assert err.startswith(f"deepauc train: error: {path}: ") and key in err, err
    assert not (tiny_data["root"] / "models").exists()


# ---------------------------------------------------------------------------- outputs
def test_killed_write_leaves_the_old_file_and_only_a_temporary(tmp_path):
    import signal
    import subprocess
    import sys

    target = tmp_path / "oof.csv"
    target.write_text("image_name,pred\nold,0.5\n")
    child = (
        "import os, signal, sys\n"
        "from deepauc.io import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_text('image_name,pred\\nhalf')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", child, str(target)], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_text() == "image_name,pred\nold,0.5\n"
    left = [p.name for p in tmp_path.iterdir() if p != target]
    assert len(left) == 1 and left[0].startswith(".oof.csv.") and left[0].endswith(".tmp")


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    from deepauc.io import write_csv

    class Boom(pd.DataFrame):
        def to_csv(self, path, **kwargs):
            open(path, "w").write("half")
            raise OSError("disk full")

    target = tmp_path / "folds.csv"
    target.write_text("old\n")
    with pytest.raises(OSError, match="disk full"):
        write_csv(Boom({"a": [1]}), target)
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["folds.csv"]
