"""Calibrate the near-duplicate search on real image collections: false-pair rate between
distinct images, largest chained group and recall on real copies, old against new settings.

    python bench/duplicate_calibration.py --out reports/duplicate_calibration.md

Needs `elpv-dataset` and `scikit-image` (requirements.txt) and, for Fashion-MNIST, Debian's
`dataset-fashion-mnist`; a collection that is not installed is reported as skipped.
"""

from __future__ import annotations

import argparse
import sys
import time

from deepauc.io import write_text
from deepauc.markdown import markdown_table
from deepauc.research import dup_calibration as cal

DEFAULT_LIMITS = {
    "elpv": None,
    "fashion-mnist": 3000,
    "digits": None,
    "lfw-subset": None,
    "skimage-photos": None,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the markdown report here")
    parser.add_argument("--copies", type=int, default=100, help="copies per kind (default 100)")
    args = parser.parse_args(argv)
    start = time.time()
    limits, skipped = {}, []
    for name, limit in DEFAULT_LIMITS.items():
        try:
            cal.COLLECTIONS[name](1)
            limits[name] = limit
        except (ImportError, OSError) as err:
            skipped.append(f"{name} ({type(err).__name__}: {err})")
    fp, rc = cal.calibrate(limits, args.copies)
    fp["false-pair rate"] = fp["false-pair rate"].map(lambda r: f"{r:.2e}")
    recall = rc.pivot_table(index=["collection", "copy"], columns="setting", values="recall")
    lines = [
        "# Near-duplicate search on real images",
        "",
        f"Command: `python bench/duplicate_calibration.py --copies {args.copies}"
        + (f" --out {args.out}`" if args.out else "`"),
        "",
        "## Distinct images called duplicates",
        "",
        markdown_table(fp),
        "",
        f"## Recall on real copies ({args.copies} per kind, each JPEG q60-95 after the change)",
        "",
        markdown_table(recall.reset_index().round(3)),
        "",
        f"Skipped: {', '.join(skipped) if skipped else 'none'}. "
        f"Run time {time.time() - start:.0f} s.",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        write_text(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
