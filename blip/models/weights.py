"""Loading weights into a module strictly, with one readable error; it knows no model (each model converts its own
checkpoints, as timm's helpers do)."""

from __future__ import annotations

import torch
from torch import nn

_MAX_LISTED = 20  # keys named per kind of mismatch; the rest are counted


class CheckpointError(ValueError):
    """Weights (or their config) that do not fit the model; the message names the file and every offending key."""


def alias_groups(module: nn.Module) -> list[list[str]]:
    """State-dict names that refer to one shared tensor (e.g. decoder layers shared with the encoder)."""
    groups: dict[tuple, list[str]] = {}
    for name, t in module.state_dict(keep_vars=True).items():
        groups.setdefault((t.data_ptr(), t.shape, t.dtype) if t.numel() else (name,), []).append(name)
    return list(groups.values())


def load_checked(module: nn.Module, state: dict[str, torch.Tensor], source: str,
                 allow_missing: tuple[str, ...] = ()) -> None:
    """Strict load with one readable error; a shared tensor may be given under any of its names.

    `allow_missing`: key prefixes the source is known not to have (the caller initialises them).
    """
    state = dict(state)
    own = module.state_dict()
    for group in alias_groups(module):
        present = [n for n in group if n in state]
        for name in group:
            if present and name not in state:
                state[name] = state[present[0]]
    missing = [k for k in own if k not in state and not k.startswith(allow_missing)]
    unexpected = [k for k in state if k not in own]
    misshaped = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                 for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or misshaped:
        parts = [f"{source}: weights do not fit the {type(module).__name__} model"]
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
            if keys:
                more = f" ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
                parts.append(f"  {label} ({len(keys)}): " + ", ".join(keys[:_MAX_LISTED]) + more)
        raise CheckpointError("\n".join(parts))
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
