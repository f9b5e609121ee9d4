"""What a fine-tuned model has learnt, in words: each structure's Dice and a warning for each one below
LEARNT_DICE. Standard library only, so the CLI (pgl_engine.finetune) and the Slicer panel (PGLCommon.model_info)
word the model's "learnt" record (docs/formats.md) the same way."""
from __future__ import annotations

LEARNT_DICE = 0.3  # below this Dice a structure counts as not learnt: the user is told to train on or label more


def describe_learnt(learnt) -> tuple[str, list[str]]:
    """(each structure's Dice, a warning per structure not learnt) from a model's "learnt" record; nothing for a
    model fine-tuned before it was recorded."""
    if not isinstance(learnt, dict) or not learnt.get("dice"):
        return "", []
    validation = learnt.get("source") == "validation"
    where = "the validation cases" if validation else "its training patches"
    steps = f"the training patches of the last {learnt.get('window_steps', '?')} steps"

    def listed(dice: dict) -> str:
        return ", ".join(f"{name} {'not measured' if d is None else f'{d:.2f}'}" for name, d in dice.items())

    text = f"Dice per structure on {where if validation else steps}: {listed(learnt['dice'])}"
    if learnt.get("training_dice"):
        text += f"; on {steps}: {listed(learnt['training_dice'])}"
    elif not validation:
        text += (" (optimistic: the model learns from these patches; holding a scan out for validation measures it "
                 "fairly)")
    warnings = [f"the model has not learnt the {name} yet (Dice {learnt['dice'][name]:.2f} on {where}): train "
                f"longer, or label it in another scan" for name in learnt.get("not_learnt") or []]
    return text + ".", warnings
