"""The command line ends every failure with one line naming the file or key."""

import pytest

from deepauc import cli
from deepauc.config import ConfigError
from deepauc.pipeline import train as train_module
from deepauc.pipeline.experiment import load_experiment
from helpers import write_experiment


def run(capsys, *argv):
    code = cli.main(list(argv))
    return code, capsys.readouterr().err.strip().splitlines()


def test_invalid_yaml_in_set_names_the_override(tiny_data, capsys):
    path = write_experiment(tiny_data, "ce")
    code, err = run(capsys, "train", "--config", str(path), "--set", "optim.lr=[0.1")
    assert code == 1 and len(err) == 1
    assert "override 'optim.lr=[0.1': value is not valid YAML" in err[0]


def test_exponent_without_dot_is_a_float(tiny_data):
    path = write_experiment(tiny_data, "ce")
    path.write_text(path.read_text().replace("lr: 0.001", "lr: 1e-3"))
    assert "lr: 1e-3" in path.read_text()
    assert load_experiment(str(path)).optim.lr == 0.001
    assert load_experiment(str(path), ["optim.lr=2E-4"]).optim.lr == 0.0002


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_number_names_the_key(tiny_data, value):
    with pytest.raises(ConfigError, match=r"optim\.lr: expected a finite number"):
        load_experiment(str(write_experiment(tiny_data, "ce")), [f"optim.lr={value}"])


def test_text_is_still_not_a_number(tiny_data):
    with pytest.raises(ConfigError, match=r"optim\.lr: expected a number, got str 'fast'"):
        load_experiment(str(write_experiment(tiny_data, "ce")), ["optim.lr=fast"])


def test_ctrl_c_is_one_line(tiny_data, capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "run", interrupted)
    code, err = run(capsys, "train", "--config", str(write_experiment(tiny_data, "ce")))
    assert code == 130
    assert err == ["deepauc train: interrupted; rerun the same command to resume"]


@pytest.mark.parametrize("content", [b"", b"\x80\x02truncated"])
def test_truncated_checkpoint_names_its_path(tiny_data, capsys, content):
    path = write_experiment(tiny_data, "ce", folds=[0])
    run_dir = load_experiment(str(path)).run_dir(0)
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoint.pt").write_bytes(content)
    code, err = run(capsys, "train", "--config", str(path))
    assert code == 1 and len(err) == 1
    assert f"{run_dir / 'checkpoint.pt'}: cannot be read" in err[0] and "delete it" in err[0]


def test_unwritable_output_folder_fails_before_predicting(tiny_data, capsys, monkeypatch):
    import deepauc.pipeline.predict as predict_module

    blocker = tiny_data["root"] / "not_a_folder"
    blocker.write_text("a file where the predictions folder should be")
    path = write_experiment(tiny_data, "ce", preds_dir=str(blocker))

    def no_computing(*args, **kwargs):
        raise AssertionError("predicted before checking the output folder")

    monkeypatch.setattr(predict_module, "load_fold_model", no_computing)
    code, err = run(capsys, "predict", "--config", str(path))
    assert code == 1 and len(err) == 1
    assert f"{blocker / 'ce'}: output folder is not writable" in err[0]


def test_ctrl_c_in_training_names_the_epoch_a_rerun_resumes_from(tiny_data, capsys, monkeypatch):
    real_run_epoch = train_module.run_epoch

    def interrupted_in_epoch_2(state, loader, epoch, steps):
        if epoch == 1:
            raise KeyboardInterrupt
        return real_run_epoch(state, loader, epoch, steps)

    monkeypatch.setattr(train_module, "run_epoch", interrupted_in_epoch_2)
    path = write_experiment(tiny_data, "ce", folds=[0], schedule={"epochs": 3})
    code, err = run(capsys, "train", "--config", str(path))
    assert code == 130
    assert err == [
        "deepauc train: interrupted; rerun the same command to resume ce fold 0 from epoch 2"
    ]
    assert (load_experiment(str(path)).run_dir(0) / "checkpoint.pt").exists()  # epoch 1 is kept
