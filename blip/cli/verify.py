"""`blip verify`: structural checks of finished datasets (checksums, counts, a sample of decodable images)."""

from __future__ import annotations

import argparse

from blip.cli.common import write_metrics


def run(args: argparse.Namespace) -> int:
    """Check each dataset; exit 1 when any has a problem."""
    from blip.data.finished import verify

    report = verify(args.datasets, args.decode_sample, args.seed)
    ok = all(r["problem_count"] == 0 for r in report.values())
    write_metrics(args.metrics, {"ok": ok, "datasets": report})
    for d, r in report.items():
        print(f"{d}: {r['samples']} samples, {r['decoded']} decoded, {r['problem_count']} problems")
        for p in r["problems"][:10]:
            print(f"  - {p}")
    return 0 if ok else 1


def add(sub: argparse._SubParsersAction) -> None:
    """Add the command's parser."""
    p = sub.add_parser("verify", help="check finished datasets: checksums, counts, decodable images")
    p.add_argument("datasets", nargs="+")
    p.add_argument("--decode-sample", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--metrics", default=None)
    p.set_defaults(func=run)
