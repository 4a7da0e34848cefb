"""The toy study's summary: AUC per loss and panel over seeds, as a markdown report."""

from __future__ import annotations

import numpy as np
import pandas as pd

from deepauc.research.toy.data import (
    LOSS_NAMES,
    PANELS,
    ToyConfig,
    llr_lipschitz,
    noisy_count,
    report_stem,
)

_SCORE_TEXT = {
    "sigmoid": "the loss fed the sigmoid score σ(z)",
    "logit": "the loss fed the raw logit z",
    "bsn": "the loss fed z / ‖z‖ over the full batch (batch score normalisation on logits)",
}

# how the output layer was drawn, where it is not nn.Linear's own draw
_HEAD_TEXT = {"pipeline": " (output layer N(0, 0.01²), bias 0, as the pipeline draws it)"}


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per loss: mean and std over seeds of each panel's test AUC, and of the paired
    changes ``+easy - clean`` and ``+noisy - clean`` (columns ``(panel, "mean"|"std")``)."""
    wide = df.pivot_table(index=["loss", "seed"], columns="panel", values="auc")
    wide["+easy - clean"] = wide["+easy"] - wide["clean"]
    wide["+noisy - clean"] = wide["+noisy"] - wide["clean"]
    cols = [*PANELS, "+easy - clean", "+noisy - clean"]
    agg = wide[cols].groupby(level="loss").agg(["mean", "std"])
    return agg.reindex([name for name in LOSS_NAMES if name in agg.index])


def _pm(mean: float, std: float, signed: bool = False) -> str:
    fmt = "+.4f" if signed else ".4f"
    std_text = "n/a" if np.isnan(std) else f"{std:.4f}"
    return f"{mean:{fmt}} ± {std_text}"


def summary_markdown(df: pd.DataFrame, cfg: ToyConfig, seed: int = 0) -> str:
    """The markdown report: the AUC table (mean ± std over seeds) and the set-up."""
    summ = summarize(df)
    seeds = sorted(df.seed.unique())
    n_noisy = noisy_count(cfg.n_train, cfg.noise_frac)
    label = {"AUC-S": "AUC-S", "AUC-M": f"AUC-M (m = {cfg.margin:g})"}
    lines = [
        "# Toy study: paper Figure 1 (AUC-S vs AUC-M with easy and noisy data)",
        "",
        f"Test AUC on {cfg.n_test} clean held-out rows, mean ± std over {len(seeds)} seed(s) "
        f"({seeds[0]}…{seeds[-1]}); the last two columns are the per-seed paired change "
        f"against the clean panel. Figure: `{report_stem(cfg)}.png` (seed {seed}).",
        "",
        "| loss | clean | +easy | +noisy | +easy − clean | +noisy − clean |",
        "|---|---|---|---|---|---|",
    ]
    for name in summ.index:
        r = summ.loc[name]
        cells = [_pm(r[(p, "mean")], r[(p, "std")]) for p in PANELS]
        cells += [
            _pm(r[(c, "mean")], r[(c, "std")], signed=True)
            for c in ("+easy - clean", "+noisy - clean")
        ]
        lines.append(f"| {label[name]} | " + " | ".join(cells) + " |")
    bayes = df.groupby("seed").bayes_auc.first()
    lines += [
        "",
        f"Bayes-optimal score (true log-likelihood ratio): test AUC {_pm(bayes.mean(), bayes.std())}.",
        "",
        "Set-up: positives N((1.5, 1.5), I), negatives ½N((-0.5, 1.5), I) + ½N((1.5, -0.5), I); "
        f"{cfg.n_train} training rows, {cfg.pos_ratio:.0%} positive. "
        f"+easy adds {int(round(cfg.easy_frac * cfg.n_train))} correctly labelled rows (same class ratio) "
        f"with |Bayes LLR| ≥ {cfg.easy_llr:g}, i.e. ≥ {cfg.easy_llr / llr_lipschitz():.1f} from the Bayes "
        f"boundary. +noisy adds {n_noisy} true positives labelled negative and {n_noisy} true negatives "
        f"labelled positive, each with |LLR| > {cfg.noise_llr:g} on its true side "
        f"({2 * n_noisy / (cfg.n_train + 2 * n_noisy):.1%} of the rows wrong). "
        f"Model 2→{cfg.hidden}→ELU→1{_HEAD_TEXT.get(cfg.head_init, '')}, "
        f"{_SCORE_TEXT[cfg.score]}; full-batch PESG, {cfg.epochs} steps, lr {cfg.lr:g} "
        f"÷10 at 50% and 75%, γ {cfg.epoch_decay:g}, λ {cfg.weight_decay:g}, momentum {cfg.momentum:g}; "
        + (
            "+easy/+noisy retrained from the clean model of their row."
            if cfg.warm_start
            else "every panel trained from the same initial weights of its seed."
        ),
    ]
    return "\n".join(lines)
