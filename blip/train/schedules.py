"""Learning-rate and alpha schedules, as pure functions of the step (so a resumed run recomputes them)."""

from __future__ import annotations

import math

from blip.config import StageConfig


def learning_rate(step: int, steps_per_epoch: int, cfg: StageConfig) -> float:
    """LR for optimizer step `step` (0-based): linear warm-up, then per-epoch step decay or cosine.

    step:   lr * lr_decay**epoch, floored at min_lr (the paper's pre-training; decay 0.85 there)
    cosine: min_lr + (lr - min_lr) * (1 + cos(pi * epoch / epochs)) / 2, per epoch (the fine-tunings)
    """
    if step < cfg.warmup_steps:
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * (step + 1) / cfg.warmup_steps
    epoch = step // max(1, steps_per_epoch)
    if cfg.schedule == "step":
        return max(cfg.min_lr, cfg.lr * cfg.lr_decay ** epoch)
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))  # cosine


def alpha_at(step: int, steps_per_epoch: int, alpha: float, ramp_epochs: float) -> float:
    """Distillation weight, ramped linearly from 0: the momentum model is still random at first."""
    ramp = ramp_epochs * steps_per_epoch
    return alpha if ramp <= 0 else alpha * min(1.0, step / ramp)
