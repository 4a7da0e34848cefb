"""The ``deepauc`` command: one subcommand per pipeline stage.

Each module is imported only when its subcommand runs; one handler turns every failure into
a one-line message."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from deepauc.logs import setup_logging

# Idle OpenMP threads sleep instead of spinning: on a shared CPU, spinning threads of
# several processes made every torch op several times slower (bench/README.md). Set
# before torch is imported; an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo-data": ("deepauc.data.demo", "write the demo data set in the competition layout"),
    "external": (
        "deepauc.data.external",
        "merge ISIC 2019/2018/2017 + extra malignant images into the training table",
    ),
    "folds": ("deepauc.data.folds", "patient-leak-free triple-stratified k-fold assignment"),
    "resize": ("deepauc.data.resize", "cache every image at the configured resolutions"),
    "train": (
        "deepauc.pipeline.train",
        "train one model (CE/focal pretraining or AUC fine-tuning) from a YAML config",
    ),
    "predict": ("deepauc.pipeline.predict", "TTA inference on out-of-fold and test images"),
    "average": (
        "deepauc.pipeline.seed_average",
        "average one model's prediction directories of several seeds into one",
    ),
    "pseudo": (
        "deepauc.pipeline.pseudo",
        "pseudo-label the test set by rank, fold k from fold k's model's predictions only",
    ),
    "meta": ("deepauc.pipeline.metadata_model", "metadata model (MLP or LightGBM) per fold"),
    "blend": (
        "deepauc.pipeline.blend",
        "blend CNN and metadata predictions with an OOF-chosen weight",
    ),
    "ensemble": ("deepauc.pipeline.ensemble", "average models into a submission CSV"),
    "validate-submission": (
        "deepauc.pipeline.submission",
        "check a submission against the sample submission",
    ),
    "report": (
        "deepauc.pipeline.report",
        "cross-validation report: tables, ROC and score histograms",
    ),
    "stamp": (
        "deepauc.pipeline.stamps",
        "record the make variables and input files a stage group reads (rewritten on change)",
    ),
    "toy": ("deepauc.research.toy", "the paper's Figure 1: AUC-S vs AUC-M on 2-D data"),
    "study": ("deepauc.research.study", "the paper's benchmark study (CE/Focal/AUC-S/AUC-M)"),
}


def build_parser(load_all: bool = False, only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepauc", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if load_all or name == only:
            importlib.import_module(module).add_arguments(p)
            p.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS:
        build_parser().parse_args(argv or ["--help"])
        return 2
    args = build_parser(only=command).parse_args(argv)
    setup_logging()
    module = importlib.import_module(COMMANDS[command][0])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt as err:
        if args.debug:
            raise
        where = getattr(err, "resume_from", "")  # set by train: the run and its epoch
        resume = f"resume {where}" if where else "resume"
        print(
            f"deepauc {command}: interrupted; rerun the same command to {resume}", file=sys.stderr
        )
        return 130
    except (ValueError, KeyError, OSError) as err:
        if args.debug:
            raise
        print(f"deepauc {command}: error: {message(err)}", file=sys.stderr)
        return 1


def message(err: BaseException) -> str:
    """The message of ``err`` (a KeyError's without the quotes ``str`` adds)."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return text or type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
