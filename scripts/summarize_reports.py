#!/usr/bin/env python3
"""Summarise `bet train` and `bet search` JSON reports: the mean ± sd tables and the paired
seed-by-seed differences that BENCHMARKS.md quotes.

Reports are grouped by (schema, dataset, model, placement, method, keep, refit); each group gets
the mean and sample standard deviation of validation eq. 13, test Recall@20 and test NDCG@20.
With `--pair A B` (two values of `--by`, default `method`), the groups that differ only in that
field are paired by seed and the differences B − A are summarised (mean, sd, paired t, how
many seeds B is ahead). Standard library only.

    python3 scripts/summarize_reports.py runs/*.json
    python3 scripts/summarize_reports.py --by placement --pair output both runs/*.json
"""

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict

FIELDS = ("schema", "dataset", "model", "placement", "method", "keep", "refit")


def load(path):
    with open(path, encoding="utf-8") as f:
        report = json.load(f)
    if not str(report.get("schema", "")).startswith(("bet-train/", "bet-search/")):
        raise SystemExit(f"error: {path}: not a bet-train or bet-search report")
    key = {field: str(report.get(field, "-")) for field in FIELDS}
    key["schema"] = key["schema"].split("/")[0]
    # A final fit on train ∪ validation is another model: its own group, never mixed in.
    key["refit"] = "yes" if report.get("refit") else "no"
    validation = report.get("validation") or {}
    test = report.get("test") or {}
    figures = {
        "validation eq13": validation.get("eq13"),
        "test R@20": (test.get("recall") or [None] * 3)[2],
        "test NDCG@20": (test.get("ndcg") or [None] * 3)[2],
    }
    return key, report.get("seed"), figures


def spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+")
    parser.add_argument("--by", default="method", choices=FIELDS, help="the field --pair compares")
    parser.add_argument("--pair", nargs=2, metavar=("A", "B"), help="summarise B − A, seed by seed")
    args = parser.parse_args()

    groups = defaultdict(dict)
    for path in args.reports:
        key, seed, figures = load(path)
        frozen = tuple(sorted(key.items()))
        if seed in groups[frozen]:
            raise SystemExit(f"error: {path}: a second report for seed {seed} of {dict(frozen)}")
        groups[frozen][seed] = figures

    names = ("validation eq13", "test R@20", "test NDCG@20")
    print("| " + " | ".join(FIELDS) + " | seeds | " + " | ".join(names) + " |")
    print("|" + "---|" * (len(FIELDS) + 1 + len(names)))
    for frozen, by_seed in sorted(groups.items()):
        key = dict(frozen)
        cells = [key[f] for f in FIELDS] + [",".join(str(s) for s in sorted(by_seed))]
        cells += [spread([fig[n] for fig in by_seed.values()]) for n in names]
        print("| " + " | ".join(cells) + " |")

    if args.pair:
        a_value, b_value = args.pair
        for frozen, a_seeds in sorted(groups.items()):
            key = dict(frozen)
            if key[args.by] != a_value:
                continue
            partner = tuple(sorted({**key, args.by: b_value}.items()))
            b_seeds = groups.get(partner)
            if not b_seeds:
                continue
            seeds = sorted(set(a_seeds) & set(b_seeds))
            rest = {k: v for k, v in key.items() if k != args.by}
            print(f"\n{b_value} − {a_value} over seeds {seeds} ({rest}):")
            for n in names:
                diffs = [b_seeds[s][n] - a_seeds[s][n] for s in seeds
                         if b_seeds[s][n] is not None and a_seeds[s][n] is not None]
                if not diffs:
                    print(f"  {n}: no pair")
                    continue
                if len(diffs) == 1:
                    print(f"  {n}: one seed, {diffs[0]:+.4f} ({diffs[0] / a_seeds[seeds[0]][n]:+.1%})")
                    continue
                mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
                t = mean / (sd / math.sqrt(len(diffs))) if sd > 0 else float("inf")
                ahead = sum(d > 0 for d in diffs)
                print(f"  {n}: mean {mean:+.5f}, sd {sd:.5f}, paired t {t:.2f}, "
                      f"{b_value} ahead in {ahead} of {len(diffs)}; by seed "
                      + ", ".join(f"{d:+.4f}" for d in diffs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
