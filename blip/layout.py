"""Where the pipeline's files live in a workspace: every path a stage reads or writes, named once.

The stages' command defaults, the bootstrapping rounds, the registry and the flow's artifacts all ask this
module; dvc.yaml names the same paths (tests/test_structure.py checks that they agree). A later round is
the same layout under its own root:

    WORKSPACE.model("captioner")        # models/captioner
    Layout(Path("rounds/r2")).metrics("select")   # rounds/r2/metrics/select.json
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# the top-level folders of a workspace, each with one kind of content
FOLDERS = ("data", "models", "checkpoints", "metrics", "plots", "reports", "rounds")


@dataclass(frozen=True)
class Layout:
    """The paths under one root: the workspace itself, or one bootstrapping round's folder."""

    root: Path = Path(".")

    def folder(self, name: str) -> Path:
        """One of the top-level folders (FOLDERS)."""
        if name not in FOLDERS:
            raise ValueError(f"{name!r} is not a workspace folder; the folders are {', '.join(FOLDERS)}")
        return self.root.joinpath(name)

    def data(self, name: str) -> Path:
        """A dataset folder: human/train, web, scores, bootstrapped, a transfer task's (vqa, video_qa)."""
        return self.root.joinpath("data", name)

    def human(self, split: str) -> Path:
        """A split of the human-annotated set."""
        return self.data(f"human/{split}")

    def model(self, name: str) -> Path:
        """A model folder (pretrain, captioner, filter, retrain, a transfer task's models)."""
        return self.root.joinpath("models", name)

    def checkpoints(self, name: str) -> Path:
        """A training run's resumable checkpoints."""
        return self.root.joinpath("checkpoints", name)

    def metrics(self, name: str) -> Path:
        """A stage's metrics file (name may have folders: downstream/vqa)."""
        return self.root.joinpath("metrics", f"{name}.json")

    def plot(self, name: str) -> Path:
        """A training run's loss curve."""
        return self.root.joinpath("plots", f"{name}_loss.csv")

    def report(self, name: str) -> Path:
        """A report's folder or file (capfilt, contracts, compare.md)."""
        return self.root.joinpath("reports", name)


WORKSPACE = Layout()
ROUNDS = Path("rounds")  # rounds 2..R, each a Layout of its own (round_layout)

# what each training stage reads and writes by default: (task, datasets, model it starts from, its model)
TRAINING = {
    "pretrain": ("pretrain", [WORKSPACE.human("train"), WORKSPACE.data("web")], None, WORKSPACE.model("pretrain")),
    "finetune_captioner": ("captioner", [WORKSPACE.human("train")], WORKSPACE.model("pretrain"),
                           WORKSPACE.model("captioner")),
    "finetune_filter": ("filter", [WORKSPACE.human("train")], WORKSPACE.model("pretrain"), WORKSPACE.model("filter")),
}


def round_layout(r: int, rounds_root: Path = ROUNDS) -> Layout:
    """Round `r`'s layout; round 1 is the main chain's, the workspace itself."""
    return WORKSPACE if r <= 1 else Layout(rounds_root / f"r{r}")


@dataclass(frozen=True)
class RoundOutputs:
    """What a round leaves for the next one and for the registry."""

    pretrain: Path  # the model pre-trained on the round's bootstrapped data
    captioner: Path  # the captioner and filter fine-tuned from it (they bootstrap the next round)
    filter: Path
    select: Path  # the round's selection statistics
    audit: Path  # on the built-in world: CapFilt judged against its truth
    eval_captioner: Path
    eval_filter: Path
    data: Path  # the round's bootstrapped data


def round_outputs(r: int, rounds_root: Path = ROUNDS) -> RoundOutputs:
    """Round `r`'s outputs: the main chain's retrained models for round 1, the round's own folder after it."""
    if r <= 1:
        w = WORKSPACE
        return RoundOutputs(w.model("retrain"), w.model("captioner_retrain"), w.model("filter_retrain"),
                            w.metrics("select"), w.metrics("audit"), w.metrics("eval_bootstrapped_captioner"),
                            w.metrics("eval_bootstrapped_filter"), w.data("bootstrapped"))
    here = round_layout(r, rounds_root)
    return RoundOutputs(here.model("pretrain"), here.model("captioner"), here.model("filter"), here.metrics("select"),
                        here.metrics("audit"), here.metrics("eval_captioner"), here.metrics("eval_filter"),
                        here.data("bootstrapped"))
