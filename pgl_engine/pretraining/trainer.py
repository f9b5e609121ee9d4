"""`pgl pretrain`: self-supervised pretraining (PGL or BYOL) on a folder of unlabeled scans."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import PRESETS, PretrainConfig, TrainConfig, with_preset
from ..data.cache import CachedScan, ScanCache, cache_scans
from ..data.imaging import find_scans
from ..errors import PGLError
from ..models.metadata import model_metadata, training_record
from ..models.store import save_model
from ..progress import ProgressCallback, emit
from ..training.distributed import World
from ..training.loop import TrainingRun, start_run
from .advice import pretraining_advice
from .ema import ema_momentum, ema_update
from .methods import SelfSupervisedMethod, build_method
from .view_pairs import ViewPairDataset, make_loader


def prepare_scans(config: TrainConfig, progress: ProgressCallback | None, world: World | None = None
                  ) -> list[CachedScan]:
    """Decode every scan once into the cache; skip and list unreadable ones.

    With several processes, each first decodes its own share (every W-th scan); after a barrier all of
    them read the complete, shared cache.
    """
    world = world or World()
    paths = scan_paths(config, progress)
    cache = ScanCache(config.cache_dir or None, config.spacing, config.hu_window)
    if world.distributed:
        cache_scans(paths[world.rank::world.size], cache)
        world.barrier()
    scans, skipped = cache_scans(
        paths, cache, lambda i, n, p: emit(progress, "progress", stage="preprocess", step=i, total=n, file=p.name))
    if skipped:
        emit(progress, "warning", message=f"skipped {len(skipped)} unreadable file(s):\n  " + "\n  ".join(skipped),
             skipped=skipped)
    if not scans:
        raise PGLError(f"{config.images}: none of the {len(paths)} file(s) could be read as a 3D scan:\n  "
                       + "\n  ".join(skipped))
    for note in cache.notes(scans):
        emit(progress, "warning", message=note)
    emit(progress, "info", message=f"{len(scans)} scans ready ({cache.hits} from cache, {cache.misses} decoded)",
         cache_hits=cache.hits, cache_misses=cache.misses)
    return scans


def scan_paths(config: TrainConfig, progress: ProgressCallback | None) -> list:
    """The scans in --images; the series and folders passed over are reported."""
    search = find_scans(config.images, tuple(config.modalities))
    paths = search.required()  # an error for a folder without scans comes before the notes on what was passed over
    if search.skipped:
        skipped = list(map(str, search.skipped))
        emit(progress, "warning", skipped=skipped,
             message=f"{config.images}: skipped {len(skipped)} series or folder(s):\n  " + "\n  ".join(skipped))
    return paths


class Pretrainer(TrainingRun):
    """PGL / BYOL pretraining: online and EMA target networks, effective-rank monitoring."""

    stage = "pretrain"
    config: PretrainConfig

    def prepare(self) -> SelfSupervisedMethod:
        self.scans = prepare_scans(self.config, self.progress, self.world)
        advice = pretraining_advice(len(self.scans), self.config.steps)
        if advice:
            emit(self.progress, "warning", message=advice[0].upper() + advice[1:])
        self.ranks: list[float] = []
        self.rank_warned = False
        return build_method(self.config)

    def trainable_parameters(self):
        return self.model.trainable_parameters()

    def batches(self, start_step: int):
        c = self.config
        dataset = ViewPairDataset(self.scans, c.patch_size, c.scale_range, c.min_overlap, c.seed,
                                  length=c.steps * c.batch_size * self.world.size, flip_axes=c.flip_axes,
                                  intensity_strength=c.intensity_strength, nonmonotone_p=c.nonmonotone_p,
                                  bias_field=c.bias_field)
        return make_loader(dataset, c.batch_size, start_step, c.steps, c.workers, self.world.rank, self.world.size)

    def compute_loss(self, batch: dict):
        step, c = self.step + 1, self.config
        self.model.rank_due = step == 1 or step % c.rank_every == 0 or step == c.steps
        return self.forward_model(batch)

    def after_update(self) -> dict:
        # the target follows only after a real optimiser step
        tau = ema_momentum(self.step, self.config.steps, self.config.ema_start)
        ema_update(self.model.ema_pairs(), tau)
        return {"tau": tau}

    def after_step(self, record: dict) -> None:
        """Keep the effective rank (on the steps that measure it) and warn once when the aligned features
        collapse."""
        rank = record.get("effective_rank")
        if rank is None:
            return
        self.ranks.append(rank)
        channels = self.config.network.feature_channels
        if (not self.rank_warned and self.step > self.config.effective_warmup
                and rank < self.config.rank_warning * channels):
            self.rank_warned = True
            emit(self.progress, "warning", step=self.step, effective_rank=rank,
                 message=f"feature collapse: effective rank {rank:.1f} of {channels} at step {self.step}. "
                         f"Fine-tuning from collapsed features can be worse than random init; raise "
                         f"--anti-collapse-weight, --ema-start or --predictor-hidden.")

    def extra_state(self) -> dict:
        return {"method": self.config.method, "ranks": list(self.ranks)}

    def load_extra_state(self, state: dict) -> None:
        self.ranks = list(state.get("ranks", []))

    def final_rank(self) -> float:
        recent = self.ranks[-10:]
        return float(np.mean(recent)) if recent else float("nan")

    def summary(self) -> dict:
        return {"effective_rank": self.final_rank()}

    def save_model(self) -> None:
        config = self.config
        tensors = {f"backbone.{k}": v for k, v in self.model.online_backbone.state_dict().items()}
        training = training_record(config, self.step, processes=self.world.size,
                                   effective_batch_size=config.batch_size * self.world.size,
                                   effective_lr=self.effective_lr, lr_scaling=config.lr_scaling,
                                   **self.overflow.record())
        metadata = model_metadata(config, "pretrained", config.method, {}, training, self.scans, len(self.scans),
                                  effective_rank=self.final_rank(), feature_channels=config.network.feature_channels)
        save_model(self.out, tensors, metadata)


def pretrain(config: PretrainConfig | None = None, progress: ProgressCallback | None = None, **options) -> Path:
    """Pretrain a backbone on a folder of unlabeled scans; returns the model folder.

    Give a PretrainConfig or its fields as keyword arguments (`pretrain(images=..., out=..., steps=...)`;
    `preset="paper"` starts from the paper's setting, the keyword arguments given still apply);
    `progress` receives one dict per event (see progress.py).
    """
    if config is None:
        config, options = PretrainConfig(**with_preset(options)), {}
        if config.preset != "none":
            emit(progress, "info", message=f"--preset {config.preset}: " + ", ".join(
                f"{k}={getattr(config, k)}" for k in PRESETS[config.preset]))
    return start_run(Pretrainer, config, progress, options)
