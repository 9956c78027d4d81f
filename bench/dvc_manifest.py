"""Wall time of a no-op `dvc repro` when a pipeline's web dataset has many shards, two layouts side by side:

* manifest:  stages depend on one JSON manifest listing every shard's URL, size and sha256
             (the shards themselves stay remote), so DVC tracks a single file;
* directory: a stage depends on a local directory holding the shard files, so DVC tracks every file.

Each layout is built in a fresh temporary git + DVC repository with a two-stage chain. The first
`dvc repro` (everything runs) is timed once, then `dvc repro` and `dvc status` with nothing stale are
timed `--repeats` times each (wall clock of the command-line tool, start-up included).

    python bench/dvc_manifest.py [--shards 100000] [--repeats 5] [--dir-files N] [--out bench/results/dvc_noop.json]

The directory layout runs at --dir-files first; from that measurement it is extrapolated to --shards
files and run there too only if the estimate fits --budget seconds (a skip and its reason are recorded).
The manifest layout runs at both counts, so the ratio directory / manifest is taken at equal shard counts.
Writes --out (JSON) and prints a short summary. Uses this environment's Python and DVC.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SEED = 0
SAMPLES_PER_SHARD = 1000
STEP_LIMIT_S = 300  # a single step slower than this is abandoned and recorded as skipped

# stage commands: run by DVC through the shell, so double quotes outside and single quotes inside
SELECT_FROM_MANIFEST = ("import json, os; m = json.load(open('data/web/manifest.json')); os.makedirs('out', exist_ok=True); "
                        "json.dump({'shards': len(m['shards']), 'samples': m['samples']}, open('out/selected.json', 'w'))")
SELECT_FROM_DIRECTORY = ("import json, os; n = len(os.listdir('data/web')); os.makedirs('out', exist_ok=True); "
                         "json.dump({'shards': n, 'samples': n * 1000}, open('out/selected.json', 'w'))")
REPORT = ("import json; s = json.load(open('out/selected.json')); "
          "json.dump({'ok': s['shards'] > 0, 'shards': s['shards']}, open('out/report.json', 'w'))")


def shard_name(index: int) -> str:
    """The file name of shard `index`, as the web dataset names its tars."""
    return f"shard-{index:06d}.tar"


def run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run a command to completion; its combined output, or exit with that output if it fails."""
    # not check=True: the failure message should carry the command's own output
    proc = subprocess.run(args, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=STEP_LIMIT_S, check=False)
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)} failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}")
    return proc.stdout


def timed(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    """Wall-clock seconds of one command, and its output."""
    start = time.perf_counter()
    out = run(args, cwd, env)
    return time.perf_counter() - start, out


def dvc(*args: str) -> list[str]:
    """A DVC command line using this environment's `dvc`, not whichever one is first on PATH."""
    return [str(BIN / "dvc"), *args]


def init_repo(repo: Path, site_cache: Path, env: dict[str, str]) -> None:
    """A fresh git + DVC repository with analytics off."""
    repo.mkdir(parents=True)
    run(["git", "init", "-q"], repo, env)
    run(["git", "config", "user.name", "bench"], repo, env)
    run(["git", "config", "user.email", "bench@example.invalid"], repo, env)
    run(dvc("init", "-q"), repo, env)
    run(dvc("config", "core.analytics", "false"), repo, env)
    # DVC keeps its file-hash state outside the repo (by default in a shared system folder);
    # a per-run folder keeps runs independent and leaves nothing behind
    run(dvc("config", "--local", "core.site_cache_dir", str(site_cache)), repo, env)


def write_manifest(path: Path, shards: int) -> int:
    """Write a manifest of `shards` entries; its size in bytes."""
    rng = random.Random(SEED)
    entries = [{"name": shard_name(i), "url": f"s3://bucket/web/{shard_name(i)}", "samples": SAMPLES_PER_SHARD,
                "bytes": rng.randint(200_000_000, 400_000_000),
                "sha256": hashlib.sha256(str(i).encode()).hexdigest()} for i in range(shards)]
    # one shard per line keeps git diffs of the manifest readable
    body = ",\n".join(json.dumps(entry) for entry in entries)
    text = f'{{"format": "blip-shards/1", "samples": {shards * SAMPLES_PER_SHARD}, "shards": [\n{body}\n]}}\n'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return len(text.encode())


def write_shard_files(folder: Path, files: int) -> int:
    """Write `files` small files of distinct content named like shard tars; their total size in bytes."""
    rng = random.Random(SEED)
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for i in range(files):
        data = rng.randbytes(rng.randint(200, 600))
        (folder / shard_name(i)).write_bytes(data)
        total += len(data)
    return total


def write_pipeline(repo: Path, select_cmd: str, dep: str) -> None:
    """dvc.yaml: `select` reads the dataset dependency, `report` reads what `select` wrote."""
    stages = {"select": {"cmd": f'python -c "{select_cmd}"', "deps": [dep], "outs": ["out/selected.json"]},
              "report": {"cmd": f'python -c "{REPORT}"', "deps": ["out/selected.json"], "outs": ["out/report.json"]}}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False, width=1000))


def measure(repo: Path, env: dict[str, str], repeats: int) -> dict:
    """Time the first `dvc repro`, commit, then time no-op `dvc repro` and `dvc status` `repeats` times each."""
    first, _ = timed(dvc("repro"), repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "pipeline"], repo, env)
    noop = []
    for _ in range(repeats):
        seconds, out = timed(dvc("repro"), repo, env)
        # a no-op that ran a stage would measure the wrong thing
        if "Running stage" in out:
            raise SystemExit(f"no-op dvc repro ran a stage:\n{out}")
        noop.append(seconds)
    status = [timed(dvc("status"), repo, env)[0] for _ in range(repeats)]
    return {"first_run_s": round(first, 3), "noop_runs_s": [round(s, 3) for s in noop],
            "noop_median_s": round(statistics.median(noop), 3), "status_runs_s": [round(s, 3) for s in status],
            "status_median_s": round(statistics.median(status), 3)}


def manifest_variant(tmp: Path, shards: int, repeats: int, env: dict[str, str]) -> dict:
    """The manifest layout at `shards` entries, plus what re-hashing the manifest costs."""
    repo = tmp / f"manifest-{shards}"
    init_repo(repo, tmp / f"site-cache-manifest-{shards}", env)
    start = time.perf_counter()
    manifest = repo / "data/web/manifest.json"
    size = write_manifest(manifest, shards)
    write_pipeline(repo, SELECT_FROM_MANIFEST, "data/web/manifest.json")
    result = {"shards": shards, "setup_s": round(time.perf_counter() - start, 3), "manifest_bytes": size}
    result |= measure(repo, env, repeats)
    # DVC skips re-hashing a file whose inode, mtime and size are unchanged; touching the manifest forces one
    # content hash (same content, so nothing is stale): the cost of reading it, against a bare md5 in-process
    os.utime(manifest)
    result["touched_status_s"] = round(timed(dvc("status"), repo, env)[0], 3)
    start = time.perf_counter()
    hashlib.md5(manifest.read_bytes()).hexdigest()
    result["md5_in_process_s"] = round(time.perf_counter() - start, 3)
    return result


def directory_variant(tmp: Path, files: int, repeats: int, env: dict[str, str]) -> dict:
    """The directory layout with `files` shard files."""
    repo = tmp / f"directory-{files}"
    init_repo(repo, tmp / f"site-cache-directory-{files}", env)
    start = time.perf_counter()
    data_bytes = write_shard_files(repo / "data/web", files)
    # the shards are too many for git; a real repository would keep them out of it too
    (repo / ".gitignore").write_text("/data/web/\n")
    write_pipeline(repo, SELECT_FROM_DIRECTORY, "data/web")
    result = {"shards": files, "setup_s": round(time.perf_counter() - start, 3), "data_bytes": data_bytes}
    return result | measure(repo, env, repeats)


def estimate_s(measured: dict, scale: float) -> float:
    """Seconds a directory run would take at `scale` times the measured file count (linear in files)."""
    per_call = measured["noop_runs_s"] + measured["status_runs_s"]
    return scale * (measured["setup_s"] + measured["first_run_s"] + sum(per_call))


def machine() -> dict:
    """What the figures were measured on."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    version = subprocess.run(dvc("--version"), capture_output=True, text=True, check=True).stdout.strip()
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version(), "dvc": version}


def write_json(path: Path, result: dict) -> None:
    """Write `result` atomically, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, path)


def main() -> None:
    """Measure both layouts and write the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=100_000, help="manifest entries (and the directory target)")
    parser.add_argument("--repeats", type=int, default=5, help="timed no-op runs of each command")
    parser.add_argument("--dir-files", type=int, default=10_000, help="files in the first directory measurement")
    parser.add_argument("--budget", type=float, default=180.0,
                        help="largest estimated seconds to spend on the directory layout at --shards files")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/dvc_noop.json")
    args = parser.parse_args()

    # the environment's console scripts first on PATH, so the stages' `python` is this environment's
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    counts = sorted({args.dir_files, args.shards})
    manifest: dict[str, dict] = {}
    directory: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for count in counts:
            manifest[str(count)] = manifest_variant(tmp, count, args.repeats, env)
            print(f"manifest  {count:>7} shards: no-op repro {manifest[str(count)]['noop_median_s']:.2f} s", flush=True)
        directory[str(args.dir_files)] = directory_variant(tmp, args.dir_files, args.repeats, env)
        print(f"directory {args.dir_files:>7} files:  no-op repro "
              f"{directory[str(args.dir_files)]['noop_median_s']:.2f} s", flush=True)
        for count in counts:
            if count <= args.dir_files:
                continue
            scale = count / args.dir_files
            estimate = estimate_s(directory[str(args.dir_files)], scale)
            first_estimate = scale * directory[str(args.dir_files)]["first_run_s"]
            if estimate > args.budget or first_estimate > STEP_LIMIT_S:
                directory[str(count)] = {"shards": count, "skipped": (
                    f"estimated {estimate:.0f} s in all (first repro {first_estimate:.0f} s) from the "
                    f"{args.dir_files}-file run, scaled linearly; over the {args.budget:.0f} s budget "
                    f"or the {STEP_LIMIT_S} s step limit")}
                continue
            try:
                directory[str(count)] = directory_variant(tmp, count, args.repeats, env)
                directory[str(count)]["estimated_s"] = round(estimate, 1)
            except subprocess.TimeoutExpired as exc:
                directory[str(count)] = {"shards": count, "skipped": f"{exc.cmd} took over {STEP_LIMIT_S} s"}

    ratios = {count: round(directory[count]["noop_median_s"] / manifest[count]["noop_median_s"], 2)
              for count in directory if "noop_median_s" in directory[count]}
    result = {"machine": machine(),
              "parameters": {"shards": args.shards, "repeats": args.repeats, "dir_files": args.dir_files,
                             "budget_s": args.budget, "step_limit_s": STEP_LIMIT_S, "seed": SEED},
              "manifest": manifest, "directory": directory,
              "noop_ratio_directory_over_manifest": ratios}
    write_json(args.out, result)

    print(f"\n{'layout':<10} {'shards':>7} {'first repro':>12} {'no-op repro':>12} {'no-op status':>13}")
    for name, runs in (("manifest", manifest), ("directory", directory)):
        for count, r in runs.items():
            if "skipped" in r:
                print(f"{name:<10} {count:>7}  skipped: {r['skipped']}")
            else:
                print(f"{name:<10} {count:>7} {r['first_run_s']:>10.2f} s {r['noop_median_s']:>10.2f} s "
                      f"{r['status_median_s']:>11.2f} s")
    for count, ratio in ratios.items():
        print(f"no-op repro, directory / manifest at {count} shards: {ratio}x")
    big = manifest[str(args.shards)]
    print(f"manifest of {args.shards} shards: {big['manifest_bytes'] / 1e6:.1f} MB; `dvc status` after touching it "
          f"(forces a re-hash) {big['touched_status_s']:.2f} s, md5 in-process {big['md5_in_process_s']:.3f} s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
