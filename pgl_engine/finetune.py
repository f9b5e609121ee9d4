"""`pgl finetune`: a segmentation network initialised from a pretrained backbone, trained on a few labels."""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from . import __version__
from .augment import augment_intensity, shift_structures
from .cache import CachedScan, ScanCache, data_fingerprint
from .budget_choice import FINISH_RESERVE_S, choose_configuration
from .config import DEFAULT_FINETUNE_MINUTES, REFINE_MINUTES, FinetuneConfig, NetworkConfig
from .dataset import make_loader
from .errors import PGLError
from .evaluate import dice_per_label
from .inference import predict_logits
from .imaging import scan_name
from .labels import (MAX_LABEL, LabelledPair, label_table, label_values, labelled_values, load_label_on_grid,
                     match_segments, pair_folders, read_dataset_json)
from .learnt import LEARNT_DICE, describe_learnt
from .losses import marginal_dice_ce_loss
from .model_store import load_model, read_metadata, save_model, update_metadata
from .networks import SegmentationNet, build_segmentation_net, is_decoder_key
from .plateau import MIN_GAIN, PlateauDetector, tail_end
from .pretraining_advice import pretraining_advice
from .progress import ProgressCallback, emit
from .running_dice import RunningDice
from .spatial_augment import SpatialAugment, mapped_grid, sample
from .training import RUNTIME_OPTIONS, TrainingRun, start_run
from .views import pad_to

FOREGROUND_SAMPLES = 20000  # remembered voxel positions per label and case, to centre patches on structures


@dataclass
class LabelledCase:
    scan: CachedScan
    labels: np.ndarray  # uint8 class indices on the scan's cached grid
    foreground: dict[int, np.ndarray]  # label -> (n, 3) voxel positions
    labelled: np.ndarray  # (classes,) bool: the classes this case labels (background always; partial labels)

    @classmethod
    def build(cls, scan: CachedScan, labels: np.ndarray, seed: int, labelled: np.ndarray | None = None
              ) -> "LabelledCase":
        """`labelled`: the classes the case labels (default: all up to its largest class)."""
        rng = np.random.default_rng([seed, 5])
        foreground = {}
        for value in np.unique(labels):
            if value == 0:
                continue
            positions = np.argwhere(labels == value)
            if len(positions) > FOREGROUND_SAMPLES:
                positions = positions[rng.choice(len(positions), FOREGROUND_SAMPLES, replace=False)]
            foreground[int(value)] = positions
        if labelled is None:
            labelled = np.ones(int(labels.max()) + 1, dtype=bool)
        return cls(scan, labels, foreground, labelled)


class PatchDataset(Dataset):
    """Item i: one patch and its labels, centred on a labelled structure with probability foreground_p."""

    def __init__(self, cases: list[LabelledCase], patch_size: tuple[int, int, int], foreground_p: float,
                 seed: int, length: int, flip_axes: tuple[int, ...] = (), structure_shift: float = 0.0,
                 spatial: SpatialAugment | None = None, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)):
        self.cases, self.patch_size, self.foreground_p = cases, np.array(patch_size), foreground_p
        self.seed, self.length, self.flip_axes = seed, length, flip_axes
        self.spatial, self.spacing = spatial, spacing
        self.structure_shift = structure_shift  # in the normalised intensity units of the cached scans
        self.structures = max((int(case.labels.max()) for case in cases), default=0)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, 3, index])
        case = self.cases[int(rng.integers(len(self.cases)))]
        image = pad_to(case.scan.load(), tuple(self.patch_size))
        labels = pad_to(case.labels, tuple(self.patch_size))
        offset = (np.array(image.shape) - np.array(case.labels.shape)) // 2
        shape = np.array(image.shape)
        if case.foreground and rng.random() < self.foreground_p:
            value = list(case.foreground)[int(rng.integers(len(case.foreground)))]
            points = case.foreground[value]
            centre = points[int(rng.integers(len(points)))] + offset
            centre = centre + rng.integers(-self.patch_size // 4, self.patch_size // 4 + 1)
        else:
            centre = np.array([rng.integers(0, s) for s in shape])
        lo = np.clip(centre - self.patch_size // 2, 0, shape - self.patch_size)
        transform = self.spatial.draw(rng) if self.spatial else None
        if transform:
            grid = mapped_grid(tuple(self.patch_size), self.spacing, lo + (self.patch_size - 1) / 2, *transform)
            image_patch, label_patch = sample(image, labels, grid)
        else:
            box = tuple(slice(int(a), int(a + p)) for a, p in zip(lo, self.patch_size))
            image_patch, label_patch = image[box], labels[box]
        patch = torch.from_numpy(np.asarray(image_patch, dtype=np.float32))[None]
        target = torch.from_numpy(np.asarray(label_patch, dtype=np.int64))[None]
        flips = [1 + a for a in self.flip_axes if rng.random() < 0.5]
        if flips:
            patch, target = patch.flip(flips), target.flip(flips)
        if self.structure_shift > 0 and self.structures:
            patch = shift_structures(patch, target, rng, self.structure_shift, self.structures)
        return {"image": augment_intensity(patch, rng), "label": target, "labelled": torch.from_numpy(case.labelled)}


def labelled_pairs(config: FinetuneConfig, progress: ProgressCallback | None
                   ) -> tuple[list[LabelledPair], dict[int, str]]:
    """The labelled pairs to use (after --label-fraction / --max-labeled) and the label names."""
    if config.dataset:
        pairs, names = read_dataset_json(config.dataset)
    else:
        pairs, notes = pair_folders(config.images, config.labels, tuple(config.modalities))
        for note in notes:
            emit(progress, "warning", message=note)
        names = {}
    if config.label_names:
        names = {i + 1: n for i, n in enumerate(config.label_names)}
    count = max(1, int(round(config.label_fraction * len(pairs))))
    if config.max_labeled:
        count = min(count, config.max_labeled)
    chosen = pairs[:count + config.val_count] if config.val_count else pairs[:count]
    return match_segments(chosen, names, progress)  # .seg.nrrd: segments become labels by name/terminology


def resolve_init(options: dict, progress: ProgressCallback | None = None) -> dict:
    """Take network and HU window from the --init model (refusing a network that contradicts it), and its spacing
    where none is given: a given spacing is kept, since a convolutional network's weights carry across spacings."""
    init = options.get("init", "none")
    if not init or init == "none":
        return options
    metadata = read_metadata(init)  # the settings only: no need to read the weights here
    from_model = {"network": NetworkConfig.from_dict(metadata["network"]), "spacing": tuple(metadata["spacing"]),
                  "hu_window": tuple(metadata["hu_window"])}
    resolved = dict(options)
    for key, value in from_model.items():
        given = options.get(key)
        if given is None:
            resolved[key] = value
            continue
        given = NetworkConfig.from_dict(given) if isinstance(given, dict) else given
        if key == "network" and given != value:
            raise PGLError(f"{init}: was pretrained with another network configuration ({value.to_dict()}) than "
                           f"the one asked for ({given.to_dict()}); drop the network options or use --init none.")
        differs = key != "network" and tuple(float(v) for v in np.atleast_1d(given)) != tuple(float(v) for v in value)
        if differs and key == "hu_window":
            emit(progress, "warning", message=f"--hu-window {given} differs from the pretrained model's {value}; "
                                              f"the model's window is used (its weights expect those intensities).")
            resolved[key] = value
        elif differs:
            emit(progress, "info", message=f"fine-tuning at --spacing {tuple(given)} mm; {init} was pretrained at "
                                           f"{value} mm (its weights carry across spacings).")
    return resolved


class Finetuner(TrainingRun):
    """Supervised fine-tuning with Dice + cross-entropy, optional validation with best-model keeping."""

    stage = "finetune"
    cpu_bf16 = True  # faster steps, so more of them in a time budget, at no cost in Dice (docs/benchmarks.md)
    config: FinetuneConfig

    def __init__(self, config: FinetuneConfig, progress: ProgressCallback | None = None,
                 resume_state: dict | None = None, started: float | None = None, choice: dict | None = None):
        super().__init__(config, progress, resume_state)
        self.started = time.perf_counter() if started is None else started  # --minutes count from here
        self.choice = choice  # how the configuration was chosen for the budget (budget_choice), for the metadata
        self.training_budget_s: float | None = None

    def prepare(self) -> SegmentationNet:
        config = self.config
        pairs, names = labelled_pairs(config, self.progress)
        cache = ScanCache(config.cache_dir or None, config.spacing, config.hu_window)
        cases = []
        for i, pair in enumerate(pairs):
            scan = cache.get(pair.image)
            cases.append((pair, scan))
            emit(self.progress, "progress", stage="preprocess", step=i + 1, total=len(pairs), file=pair.image.name)
        for note in cache.notes([scan for _, scan in cases]):
            emit(self.progress, "warning", message=note)
        present = set()
        if not names:
            # no names given: every value found becomes a label named after its number
            for pair, _ in cases:
                present |= set(label_values(pair.label)) - {0}
            names = {v: f"label {v}" for v in sorted(present)}
        too_large = sorted(v for v in names if not 0 < v <= MAX_LABEL)
        if too_large:
            where = config.dataset or "--label-names"
            raise PGLError(f"{where}: names label value(s) {too_large}; label values run from 1 to {MAX_LABEL}.")
        self.names = names
        # the network predicts classes 0..K; class k stands for the k-th smallest label value
        class_values = [0] + sorted(names)
        self.class_names = {k: names[v] for k, v in enumerate(class_values) if k}
        to_class = np.zeros(256, dtype=np.uint8)
        to_class[class_values] = np.arange(len(class_values))
        labelled = []
        for pair, scan in cases:
            classes = to_class[load_label_on_grid(pair, scan, names)]
            labelled.append(LabelledCase.build(scan, classes, config.seed,
                                               self.labelled_classes(pair, classes, class_values)))
        self.describe_partial_labels([pair for pair, _ in cases], labelled)
        found = set().union(*(c.foreground for c in labelled))
        absent = [f"{names[v]} ({v})" for k, v in enumerate(class_values) if k and k not in found]
        if absent:
            raise PGLError(f"label(s) {', '.join(absent)} appear in none of the label maps; remove them from the "
                           f"label names or label them in at least one scan.")
        self.val_cases = labelled[len(labelled) - config.val_count:] if config.val_count else []
        self.train_cases = labelled[: len(labelled) - config.val_count]
        if not self.train_cases:
            raise PGLError(f"--val-count {config.val_count} leaves no scan to train on ({len(labelled)} labelled).")
        self.scans = [scan for _, scan in cases]
        self.case_names = [scan_name(pair.image) for pair, _ in cases[: len(self.train_cases)]]
        self.best_dice, self.best_step = -1.0, 0
        self.plateau = PlateauDetector(config.patience) if config.patience else None
        self.finished_early: dict | None = None  # where a plateau ended the run before its plan
        self.segment_estimate_s: float | None = None
        self.train_dice = RunningDice(len(names) + 1)
        self.val_per_class: dict[int, float] = {}  # class -> mean validation Dice at the latest validation
        self.learnt_record: dict | None = None  # what the saved model has learnt, for the done event
        torch.manual_seed(config.seed)
        network = build_segmentation_net(config.network, len(names) + 1)
        self.init_info = {"path": "none"}
        self.transferred: set[str] = set()  # backbone parameter names whose values came from --init
        self.continued = False  # --init is a segmentation model with these labels: its head goes on too
        self.lineage: list[dict] = []
        if config.init and config.init != "none":
            self.take_init(network, load_model(config.init))
        emit(self.progress, "info", message=f"fine-tuning on {len(self.train_cases)} labelled scan(s), "
                                           f"{len(self.val_cases)} for validation, labels: {names}")
        return network

    @staticmethod
    def labelled_classes(pair: LabelledPair, classes: np.ndarray, class_values: list[int]) -> np.ndarray:
        """Which classes a case labels: those its sidecar's table lists and those its map holds (every class
        where the map has no table)."""
        listed = labelled_values(pair)  # a .seg.nrrd pair: its non-empty segments
        mask = np.ones(len(class_values), dtype=bool)
        if listed is not None:
            mask[1:] = [v in listed for v in class_values[1:]]
            mask[np.unique(classes)] = True
        return mask

    def describe_partial_labels(self, pairs: list[LabelledPair], cases: list[LabelledCase]) -> None:
        """Say which case labels which structure when some case leaves one out."""
        if all(case.labelled.all() for case in cases):
            return
        lines = []
        for pair, case in zip(pairs, cases):
            have = [self.class_names[k] for k in self.class_names if case.labelled[k]]
            lacks = [self.class_names[k] for k in self.class_names if not case.labelled[k]]
            lines.append(f"{scan_name(pair.image)} labels {', '.join(have) or 'nothing'}"
                         + (f" (not {', '.join(lacks)})" if lacks else ""))
        emit(self.progress, "info", message="partial labels: " + "; ".join(lines) + ". A structure a case does not "
                                            "label is not taught as background there.")
        unlabelled = [self.class_names[k] for k in self.class_names if not any(c.labelled[k] for c in cases)]
        if unlabelled:
            raise PGLError(f"label(s) {', '.join(unlabelled)} are labelled in none of the cases; label them in at "
                           f"least one scan or leave them out.")

    def take_init(self, network: SegmentationNet, pretrained) -> None:
        """Start from --init: a segmentation model with the same labels continues whole (head included), any
        other model gives its backbone."""
        config = self.config
        if pretrained.network_config != config.network:
            raise PGLError(f"{config.init}: was pretrained with another network configuration "
                           f"({pretrained.network_config.to_dict()}) than this fine-tuning uses "
                           f"({config.network.to_dict()}); use the model's network or --init none.")
        if pretrained.kind == "segmentation":
            theirs = {int(k): v["name"] for k, v in pretrained.label_table.items()}
            self.lineage = list(pretrained.metadata.get("lineage") or [])
            if theirs == self.names:
                network.load_state_dict(pretrained.network.state_dict())
                self.continued = True
            else:
                emit(self.progress, "warning", message=f"{config.init}: is a segmentation model for other labels "
                                                       f"({theirs}) than this fine-tuning ({self.names}); only its "
                                                       f"backbone is used and a new head is trained. To continue "
                                                       f"it, use its labels; to start from pretraining, give a "
                                                       f"pretrained model.")
        if pretrained.kind == "pretrained":
            advice = pretraining_advice(int(pretrained.metadata.get("num_scans") or 0),
                                        int((pretrained.metadata.get("training") or {}).get("steps") or 0))
            if advice:
                emit(self.progress, "warning", message=f"{config.init}: {advice}")
        if not self.continued:
            weights = pretrained.backbone.state_dict()
            if config.transfer == "encoder":
                weights = {**network.backbone.state_dict(),
                           **{k: v for k, v in weights.items() if not is_decoder_key(k)}}
            network.backbone.load_state_dict(weights)
        self.transferred = {k for k in pretrained.backbone.state_dict()
                            if self.continued or config.transfer == "whole" or not is_decoder_key(k)}
        self.init_info = {"path": str(Path(config.init).resolve()), "kind": pretrained.kind,
                          "transfer": "continued" if self.continued else config.transfer,
                          "method": pretrained.metadata.get("method"),
                          "weights_sha256": pretrained.metadata.get("weights_sha256")}
        if self.continued:
            emit(self.progress, "info", message=f"continuing {config.init} (same labels: head included)")

    def parameter_groups(self) -> list[dict]:
        """The head and any freshly initialised weights at --lr; transferred weights at --lr x --init-lr-scale,
        held fixed for the first --head-first-steps. With --minutes the two groups are kept apart even while the
        hold is 0, since the planned step count can make it more."""
        scale, delay = self.config.init_lr_scale, 0 if self.continued else self.config.head_first
        if (scale == 1.0 and delay == 0 and not self.time_budget_s()) or not self.transferred:
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
        dataset = PatchDataset(self.train_cases, c.patch_size, c.foreground_p, c.seed,
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
        scores: dict[int, list[float]] = {k: [] for k in self.class_names}
        for case in self.val_cases:
            logits = predict_logits(self.model, case.scan.load(), self.config.patch_size, self.device)
            names = {k: n for k, n in self.class_names.items() if case.labelled[k]}
            dice = dice_per_label(logits.argmax(0).numpy().astype(np.uint8), case.labels, names)
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
        training = dict(zip(self.class_names, self.train_dice.per_class()))
        judged = self.val_per_class if self.val_cases else training

        def named(scores: dict[int, float]) -> dict[str, float | None]:
            return {self.class_names[k]: None if np.isnan(d) else round(d, 3) for k, d in scores.items()}

        record = {"source": "validation" if self.val_cases else "training patches", "dice": named(judged),
                  "not_learnt": [self.class_names[k] for k, d in judged.items() if d < LEARNT_DICE],  # nan: unjudged
                  "threshold": LEARNT_DICE, "window_steps": len(self.train_dice.confusions)}
        if self.val_cases:
            record["training_dice"] = named(training)
        return record

    def after_step(self, record: dict) -> None:
        c = self.config
        if self.plateau and not self.val_cases:
            self.plateau.add(record["train_dice"])
        if self.step % c.val_every and self.step != c.steps:
            return
        dice = None
        if self.val_cases:
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
        signal = "validation Dice" if self.val_cases else "training Dice"
        self.finished_early = {"step": self.step, "end": end, "planned": planned, "signal": signal,
                               "best_dice": round(self.plateau.best, 4)}
        self.finish_early(end, f"the {signal} rose less than {100 * MIN_GAIN:g} points in {self.config.patience} "
                               f"checks in a row (best {self.plateau.best:.3f}): finishing at step {end} instead of "
                               f"{planned}, on an annealing learning rate")

    def lineage_entry(self) -> dict:
        """This run in the model's history: what it started from, on which cases, for how many steps."""
        return {"init": self.init_info["path"], "init_kind": self.init_info.get("kind", "none"),
                "continued": self.continued, "cases": self.case_names, "steps": self.step,
                "validation_dice": self.best_dice if self.val_cases else None,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}

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
        summary = {"best_val_dice": self.best_dice, "best_step": self.best_step} if self.val_cases else {}
        if self.segment_estimate_s is not None:
            summary["segment_estimate_s"] = self.segment_estimate_s
        if self.learnt_record is not None:
            summary["learnt"] = self.learnt_record
        return summary

    def keep_on_stop(self) -> str:
        """A usable model: the best validated one so far, else the weights at the stop (saved like a finished
        run's, with `stopped_early` in the metadata)."""
        if self.val_cases and self.best_step:
            update_metadata(self.out, {"stopped_early": {"step": self.step, "of": self.config.steps}})
            return f"The best model so far (validation Dice {self.best_dice:.3f} at step {self.best_step}) is kept."
        if self.val_cases:
            return ""  # stopped before the first validation: nothing validated to keep
        self.save_model()
        update_metadata(self.out, {"stopped_early": {"step": self.step, "of": self.config.steps}})
        self.after_training()
        return f"The model at step {self.step} is kept (usable; --resume trains it on to {self.config.steps} steps)."

    def after_training(self) -> None:
        """Measure how fast the model segments on this machine, so its users see the time before they start."""
        from .segment_time import EXAMPLE_CT, RATES_KEY, estimate_seconds, example_estimate, measure_rates

        timing = self.timing()
        started = time.perf_counter()
        rates = measure_rates(load_model(self.out, self.device), self.device)
        timing["measure_s"] = round(time.perf_counter() - started, 2)
        metadata = update_metadata(self.out, {RATES_KEY: rates, "timing": {**timing, "scans": len(self.scans)},
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
        if self.val_cases and self.step != self.best_step:
            return  # with validation the folder holds the best model, written when it was found
        config = self.config
        training = {k: v for k, v in config.to_dict().items() if k not in RUNTIME_OPTIONS | {"network"}}
        metadata = {
            "kind": "segmentation", "method": "finetune", "network": config.network.to_dict(),
            "spacing": list(config.spacing), "hu_window": list(config.hu_window),
            "patch_size": list(config.patch_size), "labels": label_table(self.names),
            "init": self.init_info, "training": {**training, "steps": self.step},
            "validation": {"dice": self.best_dice, "step": self.best_step} if self.val_cases else None,
            "learnt": self.learnt(), "finished_early": self.finished_early, "configuration": self.choice,
            "data_fingerprint": data_fingerprint(self.scans), "num_scans": len(self.train_cases),
            "cases": self.case_names, "lineage": [*self.lineage, self.lineage_entry()],
            "engine_version": __version__, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
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
        config, options = FinetuneConfig(**options), {}
    return start_run(Finetuner, config, progress, options, started=started, choice=choice)
