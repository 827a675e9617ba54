"""Benchmark the offline evaluation on the X Education data set: AUCs and wall time.

Usage: ``.venv/bin/python bench/evaluate.py [--exclude-post-contact] [--keep-leaky] [--seed 0]
[--csv PATH]``. Prints one JSON object: the mode, seconds, features used, and per family the
validation and test AUC, test PR-AUC, lift in the top decile and ECE before/after calibration.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from scoring.evaluate import evaluate_csv

DEFAULT_CSV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "x_education" / "Leads.csv"
POST_CONTACT = [
    "Tags",
    "Lead Quality",
    "Lead Profile",
    "Asymmetrique Activity Index",
    "Asymmetrique Profile Index",
    "Asymmetrique Activity Score",
    "Asymmetrique Profile Score",
    "Last Activity",
    "Last Notable Activity",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--target", default="Converted")
    parser.add_argument(
        "--exclude-post-contact", action="store_true", help="leave out the README's post-contact columns"
    )
    parser.add_argument("--keep-leaky", action="store_true", help="keep columns the audit calls leaky")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    result = evaluate_csv(
        args.csv,
        target=args.target,
        exclude=POST_CONTACT if args.exclude_post_contact else [],
        seed=args.seed,
        keep_leaky=args.keep_leaky,
    )
    seconds = time.perf_counter() - started
    out = {
        "csv": str(args.csv),
        "mode": {"exclude_post_contact": args.exclude_post_contact, "keep_leaky": args.keep_leaky, "seed": args.seed},
        "seconds": round(seconds, 1),
        "rows": result["dataset"]["rows"],
        "features": result["dataset"]["features"],
        "leaky_features": result["audit"]["leaky_features"],
        "selected": result["selected"],
        "models": {
            family: {
                "validation_auc": round(parts["validation"]["auc"], 4),
                "test_auc": round(parts["test"]["auc"], 4),
                "test_pr_auc": round(parts["test"]["pr_auc"], 4),
                "test_lift_top_decile": round(parts["test"]["lift_top_decile"], 3),
                "test_ece_before_calibration": round(parts["test"]["ece_before_calibration"], 4),
                "test_ece": round(parts["test"]["ece"], 4),
            }
            for family, parts in result["models"].items()
        },
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
