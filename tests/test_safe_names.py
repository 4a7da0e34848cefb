"""Image and run names that are paths are refused before anything is written."""

import json

import cv2
import numpy as np
import pandas as pd
import pytest

from deepauc.cli import main
from deepauc.config import ConfigError
from deepauc.data.image_cache import cache_path
from deepauc.data.resize import resize_table
from deepauc.data.tables import read_csv_table, read_test_csv
from deepauc.pipeline.experiment import load_experiment
from helpers import write_experiment

TRAVERSALS = ["../../victim", "..", "/tmp/victim", "a\\b", "x\x01y", "C:victim"]


def test_resize_never_writes_outside_the_cache(tmp_path, capsys):
    src = tmp_path / "sources"
    (src / "a").mkdir(parents=True)
    img = np.full((40, 40, 3), 128, np.uint8)
    cv2.imwrite(str(src / "ok.jpg"), img)
    cv2.imwrite(str(src / "a" / "victim.jpg"), img)  # what "../../victim" reaches from a/b
    victim = tmp_path / "victim.jpg"
    victim.write_bytes(b"precious")
    csv = tmp_path / "train.csv"
    pd.DataFrame({"image_name": ["ok", "../../victim"], "target": 0}).to_csv(csv, index=False)
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=r"line 3 \('../../victim'|line 3 \(../../victim"):
        resize_table(csv, src / "a", [8], cache)
    assert victim.read_bytes() == b"precious"
    assert main(["resize", "--csv", str(csv), "--image-root", str(src), "--size", "8",
                 "--out", str(cache), "--workers", "1"]) == 1  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(csv) in err[0] and "image_name" in err[0]
    assert victim.read_bytes() == b"precious"
    assert not any(p.is_file() for p in cache.rglob("*"))


@pytest.mark.parametrize("bad", TRAVERSALS)
def test_tables_refuse_path_like_image_names(tmp_path, bad):
    csv = tmp_path / "test.csv"
    pd.DataFrame(
        {
            "image_name": ["ISIC_1", bad],
            "patient_id": "IP_1",
            "sex": "male",
            "age_approx": 40,
            "anatom_site_general_challenge": "torso",
        }
    ).to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"holds a path, not a plain name .* at line 3"):
        read_test_csv(csv)
    with pytest.raises(ValueError, match=str(csv)):
        read_csv_table(csv, ["image_name"])


def test_plain_names_with_dots_are_fine(tmp_path):
    csv = tmp_path / "t.csv"
    pd.DataFrame({"image_name": ["ISIC_1.v2", "a..b", "~x"]}).to_csv(csv, index=False)
    assert len(read_csv_table(csv, ["image_name"])) == 3


@pytest.mark.parametrize("bad", TRAVERSALS)
def test_cache_path_refuses_traversal(tmp_path, bad):
    with pytest.raises(ValueError, match="not a plain name"):
        cache_path(tmp_path, 32, bad)


@pytest.mark.parametrize("bad", ["..", ".", "../x", "a\\b", "x\ny", ""])
def test_config_name_must_be_a_plain_directory_name(tiny_data, bad):
    with pytest.raises(ConfigError, match="plain directory name"):
        load_experiment(str(write_experiment(tiny_data, "ok")), [f"name={json.dumps(bad)}"])


def test_training_table_with_traversal_name_is_refused_before_training(tiny_data):
    table = pd.read_csv(tiny_data["train_csv"])
    table.loc[5, "image_name"] = "../../victim"
    table.to_csv(tiny_data["train_csv"], index=False)
    cfg = write_experiment(tiny_data, "ce", folds=[0])
    assert main(["train", "--config", str(cfg)]) == 1
    assert not (tiny_data["root"] / "models").exists()
