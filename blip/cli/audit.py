"""`blip audit`: CapFilt's filter, captioner and selection judged against the built-in world's truth."""

from __future__ import annotations

import argparse

from blip.cli.common import write_metrics
from blip.layout import WORKSPACE


def run(args: argparse.Namespace) -> int:
    """Join the world's truth to the score tables and the selection by key, and write the figures."""
    from blip.world.audit import audit

    metrics = audit(args.world, args.scores, args.selection)
    write_metrics(args.metrics, metrics)
    if not metrics["world"]:
        print(f"audit: nothing to judge against: {metrics['why']}")
        return 0
    f, s = metrics["filter"], metrics["selection"]["web"]["noisy_texts"]
    print(f"audit: filter ITM AUC clean vs noisy {f['itm_auc_clean_vs_noisy']}; select removed noisy web texts "
          f"with precision {s['precision']} and recall {s['recall']}; synthetic captions correct "
          f"{metrics['captioner'].get('correct')}")
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    """Add the command's parser."""
    p = sub.add_parser("audit", help="stage: judge CapFilt against the built-in world's truth (nothing to judge on "
                                     "your own data)")
    p.add_argument("--world", default=str(WORKSPACE.data("world")), help="the world's folder, with its truth")
    p.add_argument("--scores", default=str(WORKSPACE.data("scores")))
    p.add_argument("--selection", default=str(WORKSPACE.data("bootstrapped")))
    p.add_argument("--metrics", default=str(WORKSPACE.metrics("audit")))
    p.set_defaults(func=run)
