#!/usr/bin/env python
"""The deepauc benchmark suite (``make bench``): one markdown table per benchmark.

    python bench/run.py                  # default suite (CPU: well under 15 minutes on 2 cores)
    python bench/run.py --quick          # smoke run (a minute or two): fewer sizes and rounds
    python bench/run.py --full           # + 224 px training, 10^7 scores
    python bench/run.py --only optim_step --only metric
    python bench/run.py --device cuda --workers 16 --sizes 256 --peak-tflops 989

Tables go to stdout and to ``bench/results/<date>-<machine>.md`` (``--out`` to choose,
``--no-write`` for none), headed by the machine's CPU/GPU, thread count and versions.
Every figure is a ratio of contenders timed side by side, interleaved, in this process
(median of per-round ratios after a warm-up); see ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# OpenMP threads that spin while waiting make every torch op many times slower as soon as
# another process (a DataLoader worker, a subprocess, another user) wants the same cores;
# the `settings` benchmark measures both policies. Set before torch loads OpenMP; an
# OMP_WAIT_POLICY already in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from common import RESULTS_DIR, Ctx, Table, machine_info, machine_slug  # noqa: E402

BENCHMARKS = ["train_step", "optim_step", "data_loading", "tta", "metric", "scaling", "settings"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: fewest sizes and rounds")
    p.add_argument("--full", action="store_true", help="add 224 px training and 10^7 scores")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only these benchmarks (repeatable or comma-separated): {', '.join(BENCHMARKS)}",
    )
    p.add_argument("--reps", type=int, help="timed rounds per comparison (default 5, --quick 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument(
        "--workers",
        type=int,
        help="DataLoader workers of the pipeline (default 0 on CPU, 8 on CUDA)",
    )
    p.add_argument("--batch", type=int, default=32, help="training and TTA batch (default 32)")
    p.add_argument(
        "--model", default="efficientnet_b0", help="timm backbone of the training/TTA benchmarks"
    )
    p.add_argument(
        "--sizes", help="comma-separated resolutions for train_step/data_loading/tta/settings"
    )
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile in `settings`")
    p.add_argument(
        "--peak-tflops", type=float, default=0.0, help="device peak, to report the fraction reached"
    )
    p.add_argument(
        "--out", type=Path, help="results file (default bench/results/<date>-<machine>.md)"
    )
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--strict", action="store_true", help="exit 1 if any goal is not met")
    args = p.parse_args(argv)
    args.only = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    unknown = sorted(set(args.only) - set(BENCHMARKS))
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; choose from {BENCHMARKS}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("DEEPAUC_PROGRESS", "0")
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    workers = args.workers if args.workers is not None else (8 if device.type == "cuda" else 0)
    names = args.only or BENCHMARKS
    info = machine_info(device)
    header = ["# deepauc benchmarks", "", "| machine | |", "|---|---|"]
    header += [f"| {k} | {v} |" for k, v in info.items()]
    command = "python bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
    header += [
        f"| command | `{command.strip()}` |",
        "",
        "Every figure is a ratio of contenders timed side by side in this one process, "
        "interleaved round by round (median of the per-round ratios after a warm-up, min–max "
        "in brackets). Absolute images/s depend on the machine and its load at the time; "
        "compare ratios, not absolute figures, across runs.",
        "",
    ]
    print("\n".join(header), flush=True)
    sections: list[str] = []
    failed: list[str] = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="deepauc-bench-") as tmp:
        ctx = Ctx(
            device=device,
            tmp=Path(tmp),
            quick=args.quick,
            full=args.full,
            reps=args.reps or (2 if args.quick else 5),
            warmup=args.warmup,
            workers=workers,
            model=args.model,
            batch=args.batch,
            compile=args.compile,
            peak_tflops=args.peak_tflops,
            sizes=[int(s) for s in args.sizes.split(",")] if args.sizes else None,
        )
        for name in names:
            module = __import__(name)
            print(f"## {name}", flush=True)
            t0 = time.perf_counter()
            try:
                tables: list[Table] = module.run(ctx)
            except Exception:  # a failing benchmark is reported and the suite goes on
                tb = traceback.format_exc()
                print(tb, file=sys.stderr, flush=True)
                failed.append(name)
                sections.append(f"## {name}\n\n**FAILED**\n\n```\n{tb[-2000:]}```\n")
                continue
            seconds = time.perf_counter() - t0
            text = "\n".join(t.markdown() for t in tables) + f"\n_{name}: {seconds:.0f} s_\n"
            print(text, flush=True)
            sections.append(f"## {name}\n\n{text}")
    total = time.perf_counter() - t_start
    body = "\n".join(sections)
    unmet = body.count("**not met**")
    summary = f"Total {total / 60:.1f} min; {body.count('**met**')} goal(s) met, {unmet} not met"
    summary += f"; failed: {', '.join(failed)}" if failed else "."
    print(summary)
    if not args.no_write:
        out = args.out
        if out is None:
            suffix = (
                ("-quick" if args.quick else "")
                + ("-full" if args.full else "")
                + ("-partial" if args.only else "")
            )
            out = RESULTS_DIR / f"{dt.date.today().isoformat()}-{machine_slug(device)}{suffix}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(header) + "\n" + body + "\n" + summary + "\n")
        print(f"written {out}")
    return 1 if failed or (args.strict and unmet) else 0


if __name__ == "__main__":
    sys.exit(main())
