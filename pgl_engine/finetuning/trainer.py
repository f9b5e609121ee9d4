"""`pgl finetune`: a segmentation network initialised from a pretrained backbone, trained on a few labels.

The data (finetune_data), the start from --init (finetune_init) and the model's record (model_metadata) live
apart; the Finetuner holds what the loop needs: the loss, validation, the plateau finish, what the model keeps.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..config import DEFAULT_FINETUNE_MINUTES, REFINE_MINUTES, FinetuneConfig
from ..data.labels import label_table
from ..data.spatial_augment import SpatialAugment
from ..inference.evaluation import dice_per_label
from ..inference.sliding_window import predict_logits
from ..models.classes import class_map
from ..models.learnt import LEARNT_DICE, describe_learnt
from ..models.metadata import created_now, model_metadata, training_record
from ..models.networks import SegmentationNet, build_segmentation_net
from ..models.store import load_model, read_metadata, save_model, update_metadata
from ..pretraining.losses import marginal_dice_ce_loss
from ..pretraining.view_pairs import make_loader
from ..progress import ProgressCallback, emit
from ..training.loop import TrainingRun, start_run
from ..training.plateau import MIN_GAIN, PlateauDetector, tail_end
from ..training.running_dice import RunningDice
from .budget_choice import FINISH_RESERVE_S, choose_configuration
from .data import FinetuneData, read_finetune_data
from .initial_weights import InitStart, resolve_init, start_from_init
from .patches import PatchDataset


class Finetuner(TrainingRun):
    """Supervised fine-tuning with Dice + cross-entropy, optional validation with best-model keeping."""

    stage = "finetune"
    cpu_bf16 = True  # faster steps, so more of them in a time budget, at no cost in Dice (docs/benchmarks.md)
    config: FinetuneConfig
    data: FinetuneData
    init_start: InitStart

    def __init__(self, config: FinetuneConfig, progress: ProgressCallback | None = None,
                 resume_state: dict | None = None, started: float | None = None, choice: dict | None = None):
        super().__init__(config, progress, resume_state)
        self.started = time.perf_counter() if started is None else started  # --minutes count from here
        self.choice = choice  # how the configuration was chosen for the budget (budget_choice), for the metadata
        self.training_budget_s: float | None = None
        self.best_dice, self.best_step = -1.0, 0
        self.plateau = PlateauDetector(config.patience) if config.patience else None
        self.finished_early: dict | None = None  # where a plateau ended the run before its plan
        self.segment_estimate_s: float | None = None
        self.val_per_class: dict[int, float] = {}  # class -> mean validation Dice at the latest validation
        self.learnt_record: dict | None = None  # what the saved model has learnt, for the done event

    def prepare(self) -> SegmentationNet:
        self.data = data = read_finetune_data(self.config, self.progress)
        self.train_dice = RunningDice(len(data.names) + 1)
        torch.manual_seed(self.config.seed)
        network = build_segmentation_net(self.config.network, len(data.names) + 1)
        self.init_start = start_from_init(network, self.config, data.names, self.progress)
        emit(self.progress, "info", message=f"fine-tuning on {len(data.train_cases)} labelled scan(s), "
                                           f"{len(data.val_cases)} for validation, labels: {data.names}")
        return network

    @property
    def transferred(self) -> set[str]:
        """Backbone parameter names whose values came from --init."""
        return self.init_start.transferred

    def parameter_groups(self) -> list[dict]:
        """The head and any freshly initialised weights at --lr; transferred weights at --lr x --init-lr-scale,
        held fixed for the first --head-first-steps. With --minutes the two groups are kept apart even while the
        hold is 0, since the planned step count can make it more."""
        scale, delay = self.config.init_lr_scale, 0 if self.init_start.continued else self.config.head_first
        if (scale == 1.0 and delay == 0 and not self.config.minutes) or not self.transferred:
            return super().parameter_groups()
        fresh, pretrained = [], []
        for name, parameter in self.model.named_parameters():
            inside = name.removeprefix("backbone.")
            (pretrained if name != inside and inside in self.transferred else fresh).append(parameter)
        return [{"params": fresh}, {"params": pretrained, "lr_scale": scale, "delay": delay}]

    def batches(self, start_step: int):
        c = self.config
        hu_per_unit = c.hu_window[1] - c.hu_window[0]
        spatial = SpatialAugment(rotation_p=c.spatial_p, scale_p=c.spatial_p) if c.spatial_p else None
        dataset = PatchDataset(self.data.train_cases, c.patch_size, c.foreground_p, c.seed,
                               self.loader_steps * c.batch_size, c.flip_axes, c.structure_shift_hu / hu_per_unit,
                               spatial, c.spacing)
        return make_loader(dataset, c.batch_size, start_step, self.loader_steps, c.workers, self.world.rank,
                           self.world.size)

    def time_budget_s(self) -> float | None:
        """--minutes is wall clock from the start to the saved model: training gets what reading the scans left,
        less the end of the run (at least half the budget); fixed when first asked, once the data is read."""
        if not self.config.minutes:
            return None
        if self.training_budget_s is None:
            total = self.config.minutes * 60
            left = self.started + total - time.perf_counter() - min(FINISH_RESERVE_S, 0.1 * total)
            self.training_budget_s = max(0.5 * total, left)
            if left < 0.5 * total:
                emit(self.progress, "warning", message=f"reading the scans took {total - left:.0f} s of the "
                                                       f"{self.config.minutes:g}-minute budget; training for half "
                                                       f"the budget anyway, so the run takes longer. Give more "
                                                       f"--minutes, or fewer or smaller scans.")
        return self.training_budget_s

    def compute_loss(self, batch: dict):
        logits = self.forward_model(batch["image"]).float()  # the loss in fp32 under bf16/fp16 autocast
        loss = marginal_dice_ce_loss(logits, batch["label"], batch["labelled"])
        return loss, {"train_dice": self.train_dice.add(logits, batch["label"], batch["labelled"])}

    def validate(self) -> float:
        """Mean Dice over validation scans and the labels each of them labels, on the cached grid. Each label's
        mean over the scans stays in `val_per_class` (what the model has learnt, judged on scans it never saw)."""
        scores: dict[int, list[float]] = {k: [] for k in self.data.class_names}
        for case in self.data.val_cases:
            logits = predict_logits(self.model, case.scan.load(), self.config.patch_size, self.device)
            names = {k: n for k, n in self.data.class_names.items() if case.labelled[k]}
            dice = dice_per_label(class_map(logits, 0).numpy().astype(np.uint8), case.labels, names)
            for k, d in dice.items():
                if not np.isnan(d):
                    scores[k].append(d)
        self.val_per_class = {k: float(np.mean(v)) if v else float("nan") for k, v in scores.items()}
        every = [d for v in scores.values() for d in v]
        return float(np.mean(every)) if every else float("nan")

    def learnt(self) -> dict:
        """Each structure's Dice for the model being saved and those below LEARNT_DICE: judged on the validation
        scans where there are some, else on the training patches of the last steps (free: no pass over the whole
        scans, which costs minutes on a slow CPU; optimistic, since the model learns from those patches)."""
        names, validated = self.data.class_names, bool(self.data.val_cases)
        training = dict(zip(names, self.train_dice.per_class()))
        judged = self.val_per_class if validated else training

        def named(scores: dict[int, float]) -> dict[str, float | None]:
            return {names[k]: None if np.isnan(d) else round(d, 3) for k, d in scores.items()}

        record = {"source": "validation" if validated else "training patches", "dice": named(judged),
                  "not_learnt": [names[k] for k, d in judged.items() if d < LEARNT_DICE],  # nan: unjudged
                  "threshold": LEARNT_DICE, "window_steps": len(self.train_dice.confusions)}
        if self.data.val_cases:
            record["training_dice"] = named(training)
        return record

    def after_step(self, record: dict) -> None:
        c = self.config
        if self.plateau and not self.data.val_cases:
            self.plateau.add(record["train_dice"])
        if self.step % c.val_every and self.step != c.steps:
            return
        dice = None
        if self.data.val_cases:
            dice = record["val_dice"] = self.validate()
            if dice > self.best_dice:
                self.best_dice, self.best_step = dice, self.step
                self.save_model()
        if self.plateau and not self.finished_early and c.effective_warmup < self.step < c.steps:
            flat = self.plateau.check(dice) and self.world.is_main
            if self.world.sum([float(flat)], self.device)[0]:  # rank 0's training Dice decides for all
                self.finish_on_plateau()

    def finish_on_plateau(self) -> None:
        planned, end = self.config.steps, tail_end(self.step, self.config.steps)
        if end >= planned:
            return  # the plan ends sooner than a tail would
        signal = "validation Dice" if self.data.val_cases else "training Dice"
        self.finished_early = {"step": self.step, "end": end, "planned": planned, "signal": signal,
                               "best_dice": round(self.plateau.best, 4)}
        self.plan.finish_early(end, planned, f"the {signal} rose less than {100 * MIN_GAIN:g} points in "
                                             f"{self.config.patience} checks in a row (best {self.plateau.best:.3f}): "
                                             f"finishing at step {end} instead of {planned}, on an annealing "
                                             f"learning rate")

    def lineage_entry(self) -> dict:
        """This run in the model's history: what it started from, on which cases, for how many steps."""
        return {"init": self.init_start.info["path"], "init_kind": self.init_start.info.get("kind", "none"),
                "continued": self.init_start.continued, "cases": self.data.case_names, "steps": self.step,
                "validation_dice": self.best_dice if self.data.val_cases else None,
                "created": created_now()}

    def extra_state(self) -> dict:
        return {"best_dice": self.best_dice, "best_step": self.best_step, "finished_early": self.finished_early,
                "plateau": self.plateau.state_dict() if self.plateau else None, "configuration": self.choice}

    def load_extra_state(self, state: dict) -> None:
        self.best_dice, self.best_step = float(state.get("best_dice", -1.0)), int(state.get("best_step", 0))
        if self.plateau and state.get("plateau"):
            self.plateau.load_state_dict(state["plateau"])
        self.finished_early = state.get("finished_early")
        self.choice = state.get("configuration")
        if self.finished_early:  # the shortened plan goes on
            self.set_steps(min(self.config.steps, self.finished_early["end"]))

    def summary(self) -> dict:
        summary = {"best_val_dice": self.best_dice, "best_step": self.best_step} if self.data.val_cases else {}
        if self.segment_estimate_s is not None:
            summary["segment_estimate_s"] = self.segment_estimate_s
        if self.learnt_record is not None:
            summary["learnt"] = self.learnt_record
        return summary

    def keep_on_stop(self) -> str:
        """A usable model: the best validated one so far, else the weights at the stop (saved like a finished
        run's, with `stopped_early` in the metadata)."""
        if self.data.val_cases and self.best_step:
            update_metadata(self.out, {"stopped_early": {"step": self.step, "of": self.config.steps}})
            return f"The best model so far (validation Dice {self.best_dice:.3f} at step {self.best_step}) is kept."
        if self.data.val_cases:
            return ""  # stopped before the first validation: nothing validated to keep
        self.save_model()
        update_metadata(self.out, {"stopped_early": {"step": self.step, "of": self.config.steps}})
        self.after_training()
        return f"The model at step {self.step} is kept (usable; --resume trains it on to {self.config.steps} steps)."

    def after_training(self) -> None:
        """Measure how fast the model segments on this machine, so its users see the time before they start."""
        from ..inference.time_estimate import EXAMPLE_CT, RATES_KEY, estimate_seconds, example_estimate, measure_rates

        timing = self.timing()
        started = time.perf_counter()
        rates = measure_rates(load_model(self.out, self.device), self.device)
        timing["measure_s"] = round(time.perf_counter() - started, 2)
        metadata = update_metadata(self.out, {RATES_KEY: rates, "timing": {**timing, "scans": len(self.data.scans)},
                                              "finished_early": self.finished_early})  # the best model's too
        self.segment_estimate_s = estimate_seconds(metadata, *EXAMPLE_CT)
        emit(self.progress, "info", message=f"{example_estimate(metadata)}.")
        self.learnt_record = metadata.get("learnt")  # the saved model's: the best one where there is validation
        text, warnings = describe_learnt(self.learnt_record)
        if text:
            emit(self.progress, "info", message=text)
        for message in warnings:
            emit(self.progress, "warning", message=message)

    def save_model(self) -> None:
        if self.data.val_cases and self.step != self.best_step:
            return  # with validation the folder holds the best model, written when it was found
        data, init = self.data, self.init_start
        metadata = model_metadata(
            self.config, "segmentation", "finetune", label_table(data.names), training_record(self.config, self.step),
            data.scans, len(data.train_cases), one_piece_labels=data.one_piece, init=init.info,
            validation={"dice": self.best_dice, "step": self.best_step} if data.val_cases else None,
            learnt=self.learnt(), finished_early=self.finished_early, configuration=self.choice,
            cases=data.case_names, lineage=[*init.lineage, self.lineage_entry()])
        save_model(self.out, self.model.state_dict(), metadata)

def continues_a_segmentation_model(init: str | None) -> bool:
    return bool(init) and init != "none" and read_metadata(init).get("kind") == "segmentation"


def default_minutes(init: str | None) -> float:
    """The wall-clock budget without --steps or --minutes: a refine round's when continuing a segmentation model
    (a correction learnt while the user waits), else DEFAULT_FINETUNE_MINUTES."""
    return REFINE_MINUTES if continues_a_segmentation_model(init) else DEFAULT_FINETUNE_MINUTES


def finetune(config: FinetuneConfig | None = None, progress: ProgressCallback | None = None, **options) -> Path:
    """Fine-tune a segmentation model; returns the model folder.

    Give a FinetuneConfig or its fields as keyword arguments (`finetune(images=..., labels=..., out=...,
    init="models/pgl")`). Without `steps` or `minutes` it trains for DEFAULT_FINETUNE_MINUTES of wall clock, start to
    saved model. With a time budget, the spacing, patch size and network width not given are chosen for this
    machine (budget_choice; the model records the choice). With `init`, network and HU window come from the
    pretrained model.
    """
    started = time.perf_counter()
    choice = None
    if config is None:
        config, choice = config_from_options(options, started, progress)
        options = {}
    return start_run(Finetuner, config, progress, options, started=started, choice=choice)


def config_from_options(options: dict, started: float, progress: ProgressCallback | None
                        ) -> tuple[FinetuneConfig, dict | None]:
    """The configuration that keyword arguments give: the default budget, --init's settings, and for a time budget
    the spacing, patch size and network chosen for this machine (with the choice's record)."""
    if "steps" not in options and not options.get("minutes") and not options.get("resume"):
        options["minutes"] = default_minutes(options.get("init"))
    fixed = {k for k in ("spacing", "patch_size", "network") if options.get(k) is not None}
    if options.get("init") not in (None, "", "none"):
        fixed.add("network")
    if continues_a_segmentation_model(options.get("init")):  # its grid too: it goes on as it was trained
        fixed |= {"spacing", "patch_size"}
        options.setdefault("patch_size", tuple(read_metadata(options["init"])["patch_size"]))
    options = resolve_init(options, progress)
    choice = choose_configuration(options, fixed, started, progress)
    return FinetuneConfig(**options), choice
