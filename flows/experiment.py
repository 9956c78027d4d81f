"""One flow run, one DVC experiment: the flow's parameters become `dvc exp run --temp -S key=value`.

The experiment runs in a temporary copy of the workspace and is saved as a git ref (`dvc exp show`
lists it, `dvc exp apply <name>` brings it into the workspace): the user's params.yaml is never
written, and each run's outputs are versioned instead of overwriting the last run's. A retried run
resumes where it stopped: DVC's run cache restores every stage that already ran with the same inputs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import yaml

from blip.config import Params
from blip.params import params_from_dict

DATA_PATHS = ("data.web_shards", "data.human_karpathy", "data.human_images")


def load_recipe(path: str | Path) -> dict[str, Any]:
    """A recipe file: a flat mapping of dotted params keys to values (flows/recipes/*.yaml)."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(k, str) and not isinstance(v, dict) for k, v in data.items()):
        raise ValueError(f"{path}: a recipe is a flat mapping of dotted params keys to values, e.g. "
                         "'presets.tiny.pretrain.epochs: 6'")
    return data


def _absolute(value: Any, repo: Path) -> Any:
    """A local path relative to the repository made absolute (the experiment runs in another folder)."""
    if isinstance(value, list):
        return [_absolute(v, repo) for v in value]
    if isinstance(value, str) and value and "://" not in value and not Path(value).is_absolute():
        return str((repo / value).resolve())
    return value


def with_absolute_data_paths(overrides: dict[str, Any], repo: Path) -> dict[str, Any]:
    """The overrides with local data paths made absolute; URLs (s3://, gs://, ...) stay as they are."""
    return {k: _absolute(v, repo) if k in DATA_PATHS else v for k, v in overrides.items()}


def apply_overrides(raw: dict, overrides: dict[str, Any], source: str) -> dict:
    """params.yaml's mapping with dotted-key overrides applied (a key not in the file is refused); a key written
    `~key` is removed, as DVC's override grammar removes it (e.g. `~downstream.video.qa`)."""
    for key, value in overrides.items():
        node, *path, last = [raw, *key.removeprefix("~").split(".")]
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or last not in node:
            raise ValueError(f"{source}: no parameter '{key.removeprefix('~')}' in params.yaml to "
                             f"{'remove' if key.startswith('~') else 'set'}")
        if key.startswith("~"):
            del node[last]
        else:
            node[last] = value
    return raw


def checked_params(repo: Path, overrides: dict[str, Any]) -> Params:
    """The experiment's params, validated now: a bad value fails the flow before any stage runs."""
    raw = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    return params_from_dict(apply_overrides(raw, overrides, "flow parameters"), "params.yaml + flow parameters")


def set_param_args(overrides: dict[str, Any]) -> list[str]:
    """`-S key=value` arguments; values as JSON, which DVC's override grammar reads as the same types (`-S ~key`
    removes a key)."""
    return [arg for k, v in overrides.items()
            for arg in ("-S", k if k.startswith("~") else f"{k}={json.dumps(v)}")]


def run_experiment(repo: Path, name: str, overrides: dict[str, Any], targets: list[str], env: dict,
                   log: Callable[[str], None]) -> tuple[int, list[str]]:
    """`dvc exp run --temp --name <name> -S ... [targets]`, its output streamed to `log`: (exit code, lines)."""
    cmd = [sys.executable, "-m", "dvc", "exp", "run", "--temp", "--name", name, *set_param_args(overrides), *targets]
    proc = subprocess.Popen(cmd, cwd=repo, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip())
        log(line.rstrip())
    return proc.wait(), lines


def experiment_refs(repo: Path) -> dict[str, str]:
    """Every saved experiment's name -> commit, whatever commit it ran from (refs/exps/<baseline>/<name>)."""
    refs = subprocess.run(["git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps"], cwd=repo,
                          capture_output=True, text=True, check=True).stdout.split("\n")
    return {line.rsplit("/", 1)[-1]: line.split()[0] for line in refs if line.strip()}


def experiment_rev(repo: Path, name: str) -> str | None:
    """The commit of the experiment called `name` (None when it was not saved: it failed)."""
    return experiment_refs(repo).get(name)


def read_output(repo: Path, rev: str, path: str) -> str | None:
    """A file of the experiment, git-tracked or in DVC's cache (None when it has none)."""
    import dvc.api

    try:
        return dvc.api.read(path, repo=str(repo), rev=rev)
    except Exception:  # not an output of this experiment (a stage it did not run), or not cached here
        return None


def failure_summary(lines: list[str]) -> str:
    """The lines that say why a stage failed: a contract's or a gate's explanation, or a command's error."""
    start = re.compile(r"^(contract '.*' FAILED|gate \w+: FAILED|blip \w+: error|ERROR: )")
    keep, inside = [], False
    for line in lines:
        if start.match(line):
            inside = True
        elif not line.startswith(" "):
            inside = False
        if inside:
            keep.append(line)
    return "\n".join(keep[-60:]) or "\n".join(lines[-25:])
