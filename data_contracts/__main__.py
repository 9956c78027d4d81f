"""`python -m data_contracts KIND DATASET`: validate a dataset against its contract.

Exits 1 with a short list of the failed expectations and example samples when the contract fails,
so `dvc repro` and the Prefect flow stop before anything trains on the data. Writes the results JSON
(for DVC and MLflow) and, with --docs, great-expectations' Data Docs HTML.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from blip.data.shards import atomic_write_json
from blip.layout import WORKSPACE
from blip.params import load_params


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m data_contracts", description=__doc__)
    ap.add_argument("kind", choices=["human", "web", "bootstrapped"])
    ap.add_argument("datasets", nargs="+", help="finished dataset folder(s), each validated")
    ap.add_argument("--eval", nargs="*", default=[str(WORKSPACE.human("val")), str(WORKSPACE.human("test"))],
                    help="evaluation splits no training image may come from")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--results", required=True, help="results JSON (a DVC metric)")
    ap.add_argument("--docs", default=None, help="folder for the Data Docs HTML")
    ap.add_argument("--mlflow-run", default=None, help="MLflow run name to log results and Data Docs under")
    ap.add_argument("--passed", default=None,
                    help="written when every dataset passes: each dataset's manifest hash only (see dvc.yaml)")
    args = ap.parse_args(argv)

    from data_contracts.messages import explain
    from data_contracts.runner import validate

    params = load_params(args.params)
    if args.passed:
        Path(args.passed).unlink(missing_ok=True)  # no earlier verdict outlives a check that fails or errs
    reports = []
    try:
        for d in args.datasets:
            docs = Path(args.docs) / Path(d).name if args.docs else None
            reports.append(validate(args.kind, d, params, args.eval, docs))
    except (FileNotFoundError, ValueError) as e:  # not a dataset of this kind, unfinished, unreadable
        print(f"contract '{args.kind}': error: {e}", file=sys.stderr)
        return 2
    ok = all(r["success"] for r in reports)
    out = {"success": ok, "kind": args.kind, "reports": reports,
           "rows": sum(r["rows"] for r in reports)}
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(args.results), out)
    if args.passed and ok:
        _mark_passed(Path(args.passed), args.kind, args.datasets)
    if args.mlflow_run:
        _track(params, args, out)
    for r in reports:
        if r["success"]:
            print(f"contract '{r['kind']}' passed for {r['dataset']}: {r['rows']} rows "
                  f"({r['rows_per_s']} rows/s)")
        else:
            print(explain(r), file=sys.stderr)
    return 0 if ok else 1


def _mark_passed(marker: Path, kind: str, datasets: list[str]) -> None:
    """What training stages depend on: which data passed, not the figures or the bounds. A new bound re-runs the
    contract (seconds); while the data still passes, the marker's bytes stay and nothing after it re-runs."""
    from blip.data import storage

    lines = [f"{kind} {d} {hashlib.sha256(storage.read_bytes(storage.join(d, 'manifest.json'))).hexdigest()}"
             for d in datasets]
    storage.write_bytes(marker, ("\n".join(lines) + "\n").encode())


def _track(params, args, out: dict) -> None:
    from blip.tracking import Tracker, data_hashes, git_commit

    tracker = Tracker(params.tracking.uri, params.tracking.experiment, args.mlflow_run)
    tracker.tags({"stage": args.mlflow_run, "contract": args.kind, "git_commit": git_commit(),
                  "contract_success": str(out["success"]), **data_hashes(args.datasets)})
    tracker.metrics({"contract_success": float(out["success"]), "contract_rows": float(out["rows"]),
                     "contract_failures": float(sum(len(r["failures"]) for r in out["reports"]))})
    tracker.artifact(args.results, "contracts")
    if args.docs and Path(args.docs).is_dir():
        tracker.artifact(args.docs, "data_docs")
    tracker.end("FINISHED" if out["success"] else "FAILED")


if __name__ == "__main__":
    sys.exit(main())
