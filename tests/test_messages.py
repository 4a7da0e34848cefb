"""Error messages point at the right file, line and step."""

import pandas as pd
import pytest
import torch

from deepauc.pipeline.experiment import load_experiment
from deepauc.pipeline.pred_files import align_to, read_oof
from deepauc.pipeline.train import NonFiniteLoss, _raise_if_non_finite
from helpers import write_experiment


def test_align_to_names_the_file_each_id_is_only_in():
    ref = pd.DataFrame({"image_name": ["a", "b", "only_ref"]})
    other = pd.DataFrame({"image_name": ["a", "b", "only_other"]})
    with pytest.raises(ValueError) as err:
        align_to(ref, other, "cnn/test.csv", "meta/test.csv")
    message = str(err.value)
    assert "1 only in cnn/test.csv (e.g. ['only_ref'])" in message
    assert "1 only in meta/test.csv (e.g. ['only_other'])" in message


def test_blank_lines_do_not_shift_reported_line_numbers(tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    (d / "oof.csv").write_text(
        "image_name,fold,source,target,pred\n"
        "ISIC_1,0,competition,0,0.1\n"
        "\n"
        "ISIC_2,1,competition,1,0.7\n"
        "\n"
        "ISIC_3,1,competition,1,oops\n"
    )
    with pytest.raises(ValueError, match=r"line 6 \(ISIC_3\): 'oops'"):
        read_oof(d)


def test_duplicate_lines_count_blank_lines(tmp_path):
    from deepauc.data.tables import check_unique_names, read_csv_table

    csv = tmp_path / "t.csv"
    csv.write_text("image_name\nA\n\nB\nA\n")
    with pytest.raises(ValueError, match=r"A \(lines 2, 5\)"):
        check_unique_names(read_csv_table(csv, ["image_name"]), str(csv))


def test_non_finite_loss_counts_steps_from_one(tiny_data):
    cfg = load_experiment(write_experiment(tiny_data, "nan"))
    # the 0-based global step 4 of 3-step epochs is epoch 2's second step: step 5 of the run
    with pytest.raises(NonFiniteLoss, match=r"at step 5 \(epoch 2, step 2 of 3\)"):
        _raise_if_non_finite(cfg, torch.tensor(4), 1, 3)


def test_ragged_csv_names_the_file_and_line(tmp_path):
    from deepauc.data.tables import read_csv_table

    csv = tmp_path / "t.csv"
    csv.write_text("image_name,target\nA,0\nB,1,extra\n")
    with pytest.raises(ValueError, match=r"t.csv: not a well-formed CSV .*line 3"):
        read_csv_table(csv, ["image_name"])


def test_latin1_csv_names_the_file(tmp_path):
    from deepauc.data.tables import read_csv_table

    csv = tmp_path / "t.csv"
    csv.write_bytes("image_name,site\nA,tête\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"t.csv: not UTF-8 text \(byte 0xea at offset"):
        read_csv_table(csv, ["image_name"])
