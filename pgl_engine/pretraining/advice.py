"""When a pretrained start is not expected to help fine-tuning: said in one sentence when pretraining starts and
before fine-tuning from such a model.

PGL's lead over random initialisation was measured with 16 unlabelled scans and 300 or more pretraining steps
(docs/experiments.md); far below that (a handful of scans, a few dozen steps) nothing says it helps, and a user
should not wait for it.
"""
from __future__ import annotations

FEW_SCANS = 8  # fewer unlabelled scans than this: too little variety to learn from
FEW_STEPS = 150  # fewer pretraining steps than this: barely past the warm-up


def pretraining_advice(num_scans: int, steps: int) -> str | None:
    """One sentence when pretraining on `num_scans` scans for `steps` steps is not expected to help, else None."""
    reasons = []
    if num_scans < FEW_SCANS:
        reasons.append(f"on {num_scans} scan{'' if num_scans == 1 else 's'} (fewer than {FEW_SCANS})")
    if steps < FEW_STEPS:
        reasons.append(f"for {steps} steps (fewer than {FEW_STEPS})")
    if not reasons:
        return None
    return (f"a model pretrained {' and '.join(reasons)} is not expected to help fine-tuning: pretrain on more "
            f"scans for longer, or fine-tune from random initialisation.")
