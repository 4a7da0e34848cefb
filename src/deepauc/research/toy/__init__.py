"""``deepauc toy``: the paper's Figure 1, AUC-S against AUC-M on 2-D data.

Both losses train on clean, +easy and +noisy data per seed; test AUCs and the 2 × 3 figure.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from deepauc.io import write_text
from deepauc.metrics import roc_auc
from deepauc.research.heads import first_head
from deepauc.research.toy.data import (
    LOSS_NAMES,
    PANELS,
    SCORES,
    ToyConfig,
    bayes_llr,
    llr_lipschitz,
    make_datasets,
    noisy_count,
    report_stem,
    sample_clean,
    sample_easy,
    sample_noisy,
)
from deepauc.research.toy.model import ToyNet, model_state, train_model
from deepauc.research.toy.plot import plot_figure
from deepauc.research.toy.report import summarize, summary_markdown

__all__ = [
    "LOSS_NAMES",
    "PANELS",
    "ToyConfig",
    "ToyNet",
    "add_arguments",
    "main",
    "bayes_llr",
    "llr_lipschitz",
    "make_datasets",
    "noisy_count",
    "plot_figure",
    "run",
    "run_toy",
    "sample_clean",
    "sample_easy",
    "sample_noisy",
    "summarize",
    "summary_markdown",
    "train_model",
]


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One torch thread inside (a 2→32→1 net on 1.5k rows: threads cost more than they
    give, and one thread keeps the sums in a fixed order); the caller's count after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_toy(
    seeds: int = 5,
    epochs: int | None = None,
    seed: int = 0,
    out_dir: str | Path | None = "reports",
    cfg: ToyConfig | None = None,
    verbose: bool = False,
) -> pd.DataFrame:
    """Train the six panels for seeds ``seed … seed+seeds-1``; return the test AUCs.

    Returns a pandas DataFrame, one row per (seed, loss, panel), with columns ``seed``,
    ``loss``, ``panel``, ``auc`` (test AUC) and ``bayes_auc`` (the Bayes score's test AUC
    on that seed's test set). ``epochs`` overrides ``cfg.epochs``. Unless ``out_dir`` is
    None, writes ``toy_figure1.png`` (the first seed) and ``toy_figure1.md`` there. Runs on
    one torch thread (restored afterwards) and leaves the global torch RNG untouched.
    The command ``deepauc toy --out-dir reports --seeds 5 --epochs 500 --seed 0`` (or
    ``python -m deepauc.research.toy`` with the same flags) runs it.
    """
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    cfg = cfg or ToyConfig()
    if epochs is not None:
        cfg = replace(cfg, epochs=epochs)
    rows: list[dict] = []
    with _one_thread(), torch.random.fork_rng(devices=[]):
        for s in range(seed, seed + seeds):
            data = make_datasets(s, cfg)
            torch.manual_seed(s)
            init = model_state(first_head(ToyNet(cfg.hidden), cfg.head_init))
            seed_rows, models = _train_panels(data, cfg, init, s, verbose)
            rows += seed_rows
            if s == seed:
                shown_data, shown = data, models
    df = pd.DataFrame(rows)
    if out_dir is not None:
        out = Path(out_dir)
        stem = report_stem(cfg)
        plot_figure(shown_data, shown, df[df.seed == seed], cfg, out / f"{stem}.png")
        write_text(summary_markdown(df, cfg, seed) + "\n", out / f"{stem}.md")
    return df


def _train_panels(
    data: dict[str, dict[str, np.ndarray]], cfg: ToyConfig, init: dict, seed: int, verbose: bool
) -> tuple[list[dict], dict[tuple[str, str], ToyNet]]:
    """Train both losses on the three training sets of one seed, from ``init``.

    Returns one result row per (loss, panel) and the trained models by (loss, panel).
    """
    test = data["test"]
    bayes = roc_auc(test["y"], bayes_llr(test["x"]))
    rows, models = [], {}
    for loss_name in LOSS_NAMES:
        clean_state = init
        for panel in PANELS:
            start = clean_state if cfg.warm_start else init
            model = train_model(data[panel]["x"], data[panel]["y"], loss_name, cfg, start)
            if panel == "clean":
                clean_state = model_state(model)
            auc = roc_auc(test["y"], model.score(test["x"]))
            rows.append(
                {"seed": seed, "loss": loss_name, "panel": panel, "auc": auc, "bayes_auc": bayes}
            )
            if verbose:
                print(f"  seed {seed}  {loss_name}  {panel:<7} test AUC {auc:.4f}", flush=True)
            models[loss_name, panel] = model
    return rows, models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = ToyConfig()
    parser.add_argument(
        "--out-dir", default="reports", help="where toy_figure1.png/.md go (default reports)"
    )
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    parser.add_argument(
        "--epochs", type=int, default=d.epochs, help=f"full-batch PESG steps (default {d.epochs})"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="first seed; the figure shows it (default 0)"
    )
    parser.add_argument(
        "--margin", type=float, default=d.margin, help=f"AUC-M margin m (default {d.margin})"
    )
    parser.add_argument(
        "--noise-frac",
        type=float,
        default=d.noise_frac,
        help=f"wrong-label fraction of +noisy (default {d.noise_frac})",
    )
    parser.add_argument("--lr", type=float, default=d.lr, help=f"initial lr (default {d.lr:g})")
    parser.add_argument(
        "--score",
        choices=SCORES,
        default=d.score,
        help="h fed to the losses: sigmoid, raw logit, or logits under batch score "
        f"normalisation (default {d.score})",
    )
    parser.add_argument(
        "--warm-start",
        action="store_true",
        help="retrain +easy/+noisy from the clean model (the paper's protocol)",
    )
    parser.add_argument(
        "--head-init",
        choices=("torch_default", "pipeline"),
        default=d.head_init,
        help="output layer: nn.Linear's uniform draw, or the pipeline's N(0, 0.01²) with a "
        f"zero bias (default {d.head_init})",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-panel progress lines")


def run(args: argparse.Namespace) -> int:
    cfg = replace(
        ToyConfig(),
        margin=args.margin,
        noise_frac=args.noise_frac,
        warm_start=args.warm_start,
        score=args.score,
        lr=args.lr,
        head_init=args.head_init,
    )
    start = time.perf_counter()
    df = run_toy(
        seeds=args.seeds,
        epochs=args.epochs,
        seed=args.seed,
        out_dir=args.out_dir,
        cfg=cfg,
        verbose=not args.quiet,
    )
    print()
    print(summary_markdown(df, replace(cfg, epochs=args.epochs), args.seed))
    stem = Path(args.out_dir) / report_stem(cfg)
    print(f"\nwrote {stem}.png and {stem}.md in {time.perf_counter() - start:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deepauc.research.toy", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
