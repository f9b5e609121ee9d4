"""The jobs of a comparison: pretrain each init variant, then fine-tune, segment and evaluate each (labelled
count, seed, init), one after another or several at a time in separate processes. Every finished piece is
reused when the comparison runs again."""
from __future__ import annotations

import json
import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

import torch

from ..atomic import write_text_atomically
from ..config import WIDE_NETWORK
from ..contract import TRAIN_LOG_FILE
from ..finetuning.trainer import finetune
from ..inference.evaluation import evaluate
from ..models.store import is_model_dir
from ..phantoms.tuning import LABELS, read_phases
from ..pretraining.trainer import pretrain
from ..progress import ProgressCallback, emit
from .config import COMPARISON_HU_WINDOW, INIT_VARIANTS, CompareConfig
from .data import Cohorts
from .stats import RunResult, organ_mean_by_phase

RunKey = tuple  # (labelled count, seed, init)


def common_options(config: CompareConfig) -> dict:
    # the comparisons keep the width and window their figures were measured with (docs/experiments.md), not the
    # CPU-sized width and the soft-tissue window
    return {"patch_size": config.patch_size, "spacing": config.spacing, "batch_size": config.batch_size,
            "network": WIDE_NETWORK, "hu_window": COMPARISON_HU_WINDOW,
            "device": config.device, "workers": config.workers, "cache_dir": str(Path(config.out) / "cache")}


def model_path(config: CompareConfig, init: str) -> str:
    """Where an init variant's pretrained model goes ("none" for random init)."""
    return "none" if INIT_VARIANTS[init] is None else str(Path(config.out) / "models" / init)


def model_ready(config: CompareConfig, init: str) -> bool:
    path = model_path(config, init)
    return path == "none" or is_model_dir(Path(path))


def stage_forwarder(progress: ProgressCallback | None, stage: str):
    """Pass inner progress events on under a descriptive stage name (warnings as they are; done events not)."""
    def forward(event: dict) -> None:
        if progress is None:
            return
        if event.get("event") == "progress":
            progress({**event, "stage": f"{stage}: {event.get('stage')}"})
        elif event.get("event") == "warning":
            progress(event)
    return forward


def pretrain_one(config: CompareConfig, data: Cohorts, init: str, progress) -> str:
    """The pretrained model of one init variant ("none" for random); reused when already there."""
    variant, out = INIT_VARIANTS[init], model_path(config, init)
    if not model_ready(config, init):
        emit(progress, "info", message=f"pretraining {init} ({config.pretrain_steps} steps)")
        options = {**common_options(config), "steps": config.pretrain_steps, **config.pretrain_options, **variant}
        pretrain(images=str(data.unlabeled / "images"), out=str(out), overwrite=True,
                 progress=stage_forwarder(progress, f"pretrain {init}"), **options)
    return out


def run_folder(config: CompareConfig, init: str, labeled: int, seed: int) -> Path:
    return Path(config.out) / "runs" / f"n{labeled}" / f"seed{seed}" / init


def run_one(config: CompareConfig, data: Cohorts, init: str, model: str, labeled: int, seed: int,
            progress) -> RunResult:
    """Fine-tune one (init, labelled count, seed), segment the test set and evaluate; cached in result.json."""
    from ..inference.segmentation import segment

    run = run_folder(config, init, labeled, seed)
    result_file = run / "result.json"
    if result_file.is_file():
        return RunResult.from_json(json.loads(result_file.read_text()))
    started = time.perf_counter()
    options = {**common_options(config), "steps": config.finetune_steps, "lr": config.finetune_lr,
               **config.finetune_options}
    finetune(dataset=str(data.labeled / "dataset.json"), out=str(run / "model"), init=model, seed=seed,
             max_labeled=labeled, overwrite=True,
             progress=stage_forwarder(progress, f"finetune {init} n={labeled} seed={seed}"), **options)
    # every piece kept, as when the comparisons' figures were measured
    segment(run / "model", data.test / "images", run / "pred", device=config.device, largest_component="none")
    evaluation = evaluate(run / "pred", data.test / "labels", run / "evaluation.csv", names=LABELS)
    curve = [json.loads(line)["loss"] for line in (run / "model" / TRAIN_LOG_FILE).read_text().splitlines()]
    result = RunResult(init, labeled, seed, dice={k: v["dice"] for k, v in evaluation["mean"].items()},
                       hd95_mm={k: v["hd95_mm"] for k, v in evaluation["mean"].items()}, loss_curve=curve,
                       organ_mean_by_phase=organ_mean_by_phase(evaluation["cases"], read_phases(data.test)),
                       seconds=time.perf_counter() - started)
    write_text_atomically(result_file, json.dumps(result.to_json()))
    return result


def report_run(progress, result: RunResult) -> None:
    emit(progress, "info", message=f"n={result.labeled} seed={result.seed} {result.init}: "
                                   f"mean Dice {result.dice['mean']:.3f}")


def run_in_turn(config: CompareConfig, data: Cohorts, progress) -> tuple[dict[str, str], dict[RunKey, RunResult]]:
    """Pretrain every variant, then fine-tune every (labelled count, seed, init), one after another."""
    models = {init: pretrain_one(config, data, init, progress) for init in config.inits}
    finished = {}
    for n in config.labeled:
        for seed in range(config.seeds):
            for init in config.inits:
                finished[(n, seed, init)] = run_one(config, data, init, models[init], n, seed, progress)
                report_run(progress, finished[(n, seed, init)])
    return models, finished


def _limit_threads(threads: int) -> None:
    torch.set_num_threads(threads)


class ProcessScheduler:
    """The same jobs, `config.jobs` at a time in separate processes. Pretraining starts first; fine-tuning runs
    start as soon as their init is ready (random at once), lowest seed first, so that an interrupted comparison
    has whole seeds done and the CPU cores or the GPU stay busy."""

    def __init__(self, config: CompareConfig, data: Cohorts, progress):
        self.config, self.data, self.progress = config, data, progress
        self.order = {init: i for i, init in enumerate(config.inits)}
        self.total = len(config.labeled) * config.seeds * len(config.inits)
        self.models: dict[str, str] = {}
        self.finished: dict[RunKey, RunResult] = {}
        self.running: dict[Future, tuple[str, str]] = {}  # future -> ("pretrain" | "run", init)
        self.ready: list[tuple[int, int, int, str]] = []  # (seed, labelled count, init order, init), sorted

    def run(self) -> tuple[dict[str, str], dict[RunKey, RunResult]]:
        threads = max(1, (os.cpu_count() or 1) // self.config.jobs)
        pool = ProcessPoolExecutor(self.config.jobs, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_limit_threads, initargs=(threads,))
        try:
            self.start_pretraining(pool)
            while self.running or self.ready:
                self.start_runs(pool)
                if self.running:
                    done, _ = wait(self.running, return_when=FIRST_COMPLETED)
                    for future in done:
                        self.collect(future)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        return self.models, self.finished

    def start_pretraining(self, pool: ProcessPoolExecutor) -> None:
        for init in self.config.inits:
            if model_ready(self.config, init):  # random init, or pretrained by an earlier call
                self.model_done(init, model_path(self.config, init))
            else:
                emit(self.progress, "info", message=f"pretraining {init} ({self.config.pretrain_steps} steps)")
                self.running[pool.submit(pretrain_one, self.config, self.data, init, None)] = ("pretrain", init)

    def model_done(self, init: str, model: str) -> None:
        self.models[init] = model
        self.ready.extend((seed, n, self.order[init], init) for seed in range(self.config.seeds)
                          for n in self.config.labeled)
        self.ready.sort()

    def start_runs(self, pool: ProcessPoolExecutor) -> None:
        while self.ready and len(self.running) < self.config.jobs:
            seed, n, _, init = self.ready.pop(0)
            if (run_folder(self.config, init, n, seed) / "result.json").is_file():  # finished earlier: no process
                self.record(run_one(self.config, self.data, init, self.models[init], n, seed, None))
                continue
            job = pool.submit(run_one, self.config, self.data, init, self.models[init], n, seed, None)
            self.running[job] = ("run", init)

    def collect(self, future: Future) -> None:
        kind, init = self.running.pop(future)
        if kind == "pretrain":
            emit(self.progress, "info", message=f"pretrained {init}")
            self.model_done(init, future.result())
        else:
            self.record(future.result())

    def record(self, result: RunResult) -> None:
        self.finished[(result.labeled, result.seed, result.init)] = result
        report_run(self.progress, result)
        emit(self.progress, "progress", stage="compare: fine-tuning runs", step=len(self.finished), total=self.total)
