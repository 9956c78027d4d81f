"""`blip gate filter|captioner`: the quality gate a fine-tuned model must pass before it bootstraps data."""

from __future__ import annotations

import argparse
import sys

from blip.cli.common import DEVICE_HELP, write_metrics
from blip.layout import WORKSPACE
from blip.params import load_params


def run(args: argparse.Namespace) -> int:
    """Judge the model on human val pairs; exit 1 when it fails and gates.on_fail is stop."""
    from blip import gates
    from blip.tracking import Tracker, git_commit

    params = load_params(args.params)
    measure = gates.filter_gate if args.kind == "filter" else gates.captioner_gate
    result = measure(args.model, args.data, params, args.device)
    write_metrics(args.metrics, result)
    tracker = Tracker(params.tracking.uri, params.tracking.experiment, f"gate_{args.kind}")
    tracker.tags({"stage": f"gate_{args.kind}", "model": args.model, "passed": result["passed"],
                  "git_commit": git_commit()})
    tracker.metrics({k: v for k, v in result.items() if isinstance(v, float) and not isinstance(v, bool)})
    tracker.dict_artifact(result, f"gate_{args.kind}.json")
    tracker.end()
    verdict = gates.explain(result)
    if not result["passed"] and params.gates.on_fail == "stop":
        print(verdict, file=sys.stderr)
        return 1
    print(verdict if result["passed"] else f"{verdict}\n  (gates.on_fail=warn: going on)")
    if args.passed:  # what later stages depend on: the model that passed, not the figures (see dvc.yaml)
        from blip.capfilt.scoring import model_id
        from blip.data import storage

        storage.write_bytes(args.passed, f"{model_id(args.model)}\n".encode())
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    """Add the command's parser."""
    p = sub.add_parser("gate", help="stage: judge a fine-tuned filter or captioner on human val pairs (params `gates`)")
    p.add_argument("kind", choices=["filter", "captioner"])
    p.add_argument("--model", required=True)
    p.add_argument("--data", default=str(WORKSPACE.human("val")))
    p.add_argument("--metrics", default=None)
    p.add_argument("--passed", default=None, help="written when the model passes (or warns): the model's id only")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.set_defaults(func=run)
