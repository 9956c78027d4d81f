"""What a flow run shows in the Prefect UI: markdown for the comparison, CapFilt's statistics, the gates
and the contracts; links to the MLflow parent run and to the CapFilt examples sheet."""

from __future__ import annotations

import json
import os
from typing import Callable

from blip.layout import WORKSPACE
from data_contracts.messages import markdown as contract_markdown

# where people open MLflow's UI when the tracking store is a local file (infra/start_local.sh mlflow)
UI_ENV = "BLIP_MLFLOW_UI"
DEFAULT_UI = "http://127.0.0.1:5000"


def mlflow_ui(tracking_uri: str) -> str:
    """The MLflow UI's address: the tracking server itself, or the local UI over the sqlite store."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return os.environ.get(UI_ENV, DEFAULT_UI).rstrip("/")


def run_url(ui: str, experiment_id: str, run_id: str) -> str:
    """A run's page in the MLflow UI."""
    return f"{ui}/#/experiments/{experiment_id}/runs/{run_id}"


class ProgressArtifacts:
    """CapFilt's `[progress]` lines as the flow run's artifacts, updated while it scores: a progress bar
    (`capfilt-progress`) and a line of figures (`capfilt-status`: shards done of the total, images/s, ETA).
    The markdown gets a new version at most every `every_s` seconds and at the last shard."""

    PREFIX = "[progress] "

    def __init__(self, every_s: float = 10.0):
        self.every_s, self.bar_id, self.last = every_s, None, 0.0

    def update(self, line: str) -> None:
        """Turn one log line into artifact updates, if it is a progress line."""
        import time

        from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact

        if not line.startswith(self.PREFIX):
            return
        try:
            p = json.loads(line[len(self.PREFIX):])
            percent = 100.0 * p["done"] / max(1, p["total"])
        except (ValueError, KeyError, TypeError):  # not one of ours: a log line like any other
            return
        if self.bar_id is None:
            self.bar_id = create_progress_artifact(progress=percent, key=f"{p.get('stage', 'capfilt')}-progress",
                                                   description="CapFilt: shards scored of the total")
        else:
            update_progress_artifact(self.bar_id, percent)
        now = time.time()
        if now - self.last >= self.every_s or p["done"] == p["total"]:
            self.last = now
            create_markdown_artifact(
                key=f"{p.get('stage', 'capfilt')}-status", description="CapFilt while it runs",
                markdown=f"### CapFilt: {p['done']} of {p['total']} shards\n\n{p.get('images', 0)} images scored, "
                         f"{p.get('images_per_s', 0)} images/s, ETA {p.get('eta_s', 0):.0f} s\n")


def capfilt_markdown(select: dict, audit: dict | None) -> str:
    """What CapFilt kept and removed, by source, with the threshold and its calibration."""
    lines = ["### CapFilt", "", "| source | total | kept | removed | kept share |", "|---|---|---|---|---|"]
    for source in ("human", "web", "synthetic"):
        s = select.get(source) or {}
        if s:
            lines.append(f"| {source} | {s['total']} | {s['kept']} | {s['removed']} | {s['kept_ratio']:.3f} |")
    lines.append("")
    cal = select.get("calibration")
    how = (f"calibrated to precision {cal['target_precision']} on {cal['pairs']} human val pairs "
           f"(recall {cal['recall']:.3f})" if cal else "fixed (select.threshold)")
    lines.append(f"Threshold {select['threshold']:.4g}, {how}. Noise ratio (synthetic captions removed) "
                 f"{select['noise_ratio']:.3f}; web texts removed {select['web_removed_share']:.3f}.")
    if (audit or {}).get("world"):  # the built-in world knows which texts are noisy
        f, removed = audit["filter"], audit["selection"]["web"]["noisy_texts"]
        lines.append(f"On the built-in world: the filter's ITM AUC, clean against noisy web texts, "
                     f"{f['itm_auc_clean_vs_noisy']}; noisy web texts removed with precision {removed['precision']} "
                     f"and recall {removed['recall']}; synthetic captions correct "
                     f"{audit['captioner'].get('correct', 0):.1%}.")
    return "\n".join(lines) + "\n"


def gates_markdown(gates: dict[str, dict]) -> str:
    """The quality gates' measurements and verdicts."""
    lines = ["### Quality gates", "", "| model | measured | verdict |", "|---|---|---|"]
    for kind, g in gates.items():
        if kind == "filter":
            measured = f"ITM AUC {g['itm_auc']}, recall {g['recall']:.3f} at threshold {g['threshold']}"
        else:
            measured = f"CIDEr {g['CIDEr']:.3f}, chance {g['CIDEr_chance']:.3f} (ratio {g['ratio']})"
        verdict = "passed" if g["passed"] else "FAILED: " + "; ".join(g["problems"])
        lines.append(f"| {kind} | {measured} | {verdict} |")
    return "\n".join(lines) + "\n"


def contracts_markdown(results: list[dict]) -> str:
    """Every contract the experiment ran, each dataset with its verdict (and failures, explained)."""
    return "\n".join(contract_markdown(r) for r in results)


def publish(read: Callable[[str], str | None], tracking_uri: str, experiment_id: str, parent_run_id: str,
            examples_run_id: str | None, experiment: str) -> list[str]:
    """Create the flow run's artifacts from the experiment's files (`read(path)`); returns their keys."""
    ui = mlflow_ui(tracking_uri)
    from prefect.artifacts import create_image_artifact, create_link_artifact, create_markdown_artifact

    def load(path: str) -> dict | None:
        text = read(path)
        return json.loads(text) if text else None

    made = []
    create_link_artifact(key="mlflow-run", link=run_url(ui, experiment_id, parent_run_id),
                         link_text=f"MLflow parent run of experiment {experiment}",
                         description="every stage's MLflow run is nested under it")
    made.append("mlflow-run")
    compare = read(str(WORKSPACE.report("compare.md")))
    if compare:
        create_markdown_artifact(key="compare", markdown=compare, description="baseline vs bootstrapped model")
        made.append("compare")
    gates = {k: g for k in ("filter", "captioner") if (g := load(str(WORKSPACE.metrics(f"gate_{k}"))))}
    if gates:
        create_markdown_artifact(key="gates", markdown=gates_markdown(gates), description="quality gates")
        made.append("gates")
    select = load(str(WORKSPACE.metrics("select")))
    if select:
        audit = load(str(WORKSPACE.metrics("audit")))
        create_markdown_artifact(key="capfilt", markdown=capfilt_markdown(select, audit),
                                 description="what CapFilt kept and removed")
        made.append("capfilt")
    contracts = [r for name in ("validate_web", "validate_human", "validate_bootstrapped")
                 if (r := load(str(WORKSPACE.metrics(name))))]
    if contracts:
        create_markdown_artifact(key="contracts", markdown=contracts_markdown(contracts),
                                 description="data contracts")
        made.append("contracts")
    if examples_run_id:
        page = f"{run_url(ui, experiment_id, examples_run_id)}/artifacts/select/examples.png"
        if tracking_uri.startswith(("http://", "https://")):  # a tracking server serves the image itself
            create_image_artifact(image_url=f"{ui}/get-artifact?path=select/examples.png&run_uuid={examples_run_id}",
                                  key="capfilt-examples", description="CapFilt examples sheet")
        else:
            create_link_artifact(key="capfilt-examples", link=page, link_text="CapFilt examples sheet (MLflow)")
        made.append("capfilt-examples")
    return made


def failure_markdown(stage_output: str, experiment: str) -> str:
    """Why the experiment stopped, as the stage said it."""
    return f"### Experiment `{experiment}` stopped\n\n```\n{stage_output}\n```\n"
