"""`pgl` command line: phantom | pretrain | finetune | segment | evaluate | scan-list | compare | check-pretraining
| demo | export-dataset | export."""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

from . import __version__
from .cli_options import add_dataclass_options, dataclass_from_args
from .config import DEFAULT_FINETUNE_MINUTES, FinetuneConfig, NetworkConfig, PretrainConfig
from .contract import EXIT_CANCELLED, EXIT_ERROR, EXIT_OK
from .errors import PGLError, TrainingInterrupted
from .progress import JsonLinesReporter, LogLinesReporter, TerminalReporter, emit, is_closed_pipe
from .training.interrupt import request_stop, watch_stop_file
from .training.precision import PRECISIONS
from .training.process_alive import WORK_FOLDER_RECORD


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    """The options every command shares: --progress, --stop-file and --work-dir."""
    parser.add_argument("--progress", choices=("auto", "bar", "log", "json", "none"), default="auto",
                        help="auto = a bar on a terminal, else log (plain lines on stderr: every warning and a "
                             "progress line every 10 s); json = one JSON event per line on stdout; none = errors "
                             "only (default: auto)")
    parser.add_argument("--stop-file", default="", metavar="PATH",
                        help="stop gracefully (checkpoint first) once this file exists; how a GUI cancels a run")
    parser.add_argument("--work-dir", default="", metavar="PATH",
                        help="the caller's temporary folder for this run (its exported scans): removed at exit if "
                             "the run stops or fails or the caller has gone (closed JSON progress pipe), and only if "
                             "it holds the Slicer side's record of its processes; kept after a success")


def add_modalities_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--modalities", nargs="+", default=["CT"], metavar="MODALITY",
                        help="DICOM modalities to use (scan files are always used; default: CT)")


def make_reporter(mode: str):
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "log"
    if mode == "json":
        return JsonLinesReporter(on_closed=request_stop)  # the caller has gone: stop as if asked to
    return {"bar": TerminalReporter, "log": LogLinesReporter}.get(mode, lambda: None)()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pgl", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"pgl_engine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    ph = sub.add_parser("phantom", help="write a synthetic abdominal CT cohort (NIfTI)")
    ph.add_argument("--out", required=True, help="output folder (images/ and, with --labels, labels/)")
    ph.add_argument("--count", type=int, default=8, help="number of scans (default: 8)")
    ph.add_argument("--labels", action="store_true", help="also write label maps (liver, spleen, kidneys, tumour)")
    ph.add_argument("--seed", type=int, default=0, help="first subject's seed (default: 0)")
    ph.add_argument("--spacing-scale", type=float, default=1.0,
                    help="multiply the scanner spacing (0.7-0.9 mm in-plane, 2-5 mm slices) for smaller files")
    ph.add_argument("--phases", nargs="+", default=["venous"], choices=["venous", "arterial", "native"],
                    help="contrast phases; each scan is drawn in one of them (default: venous)")
    ph.add_argument("--family", choices=("phantom", "heldout"), default="phantom",
                    help="phantom: the demo's and the tests' phantoms; heldout: a frozen family from a separate "
                         "generator (other shapes, overlapping contrast, 2.5-5 mm slices) to judge models on, never "
                         "to tune on; files heldout_NNN.nii.gz, no --phases (default: phantom)")
    add_progress_option(ph)

    pt = sub.add_parser("pretrain", help="self-supervised pretraining (PGL or BYOL) on a folder of scans")
    add_dataclass_options(pt, PretrainConfig)
    net = pt.add_argument_group("network")
    add_dataclass_options(net, NetworkConfig)
    add_progress_option(pt)

    ft = sub.add_parser("finetune", help="fine-tune a segmentation model from a few labelled scans")
    add_dataclass_options(ft, FinetuneConfig, skip=("steps",))
    ft.add_argument("--steps", type=int, default=None,
                    help=f"optimisation steps; without --steps and --minutes about {DEFAULT_FINETUNE_MINUTES:g} "
                         f"minutes from start to saved model (the step count set from the time the first steps "
                         f"take; spacing, patch and width not given chosen for this machine)")
    add_dataclass_options(ft.add_argument_group("network (default: from --init, else chosen for the budget)"),
                          NetworkConfig)
    add_progress_option(ft)

    sg = sub.add_parser("segment", help="segment a scan or a folder of scans with a fine-tuned model")
    sg.add_argument("--model", required=True, help="segmentation model folder (from pgl finetune)")
    sg.add_argument("--input", required=True, help="scan file or folder of scans")
    sg.add_argument("--output", required=True, help="label map file, or folder for a folder of scans")
    sg.add_argument("--tta", action="store_true", help="average flipped predictions (axes the model trained with)")
    sg.add_argument("--largest-component", nargs="?", const="all", default="auto", choices=("auto", "all", "none"),
                    help="keep only the largest piece of: the labels that were one piece in every case the model "
                         "learnt from (auto, the default), every label (all, or the option alone), none; the "
                         "other pieces take the label around them")
    sg.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    sg.add_argument("--overlap", type=float, default=0.5,
                    help="sliding-window overlap (default: 0.5)")
    sg.add_argument("--sw-batch-size", type=int, default=4,
                    help="sliding windows per forward pass (default: 4)")
    sg.add_argument("--precision", choices=PRECISIONS, default="auto",
                    help="auto: bf16 on CPUs with native bf16 and fp16 on CUDA; fp32: full precision everywhere "
                         "(default: auto)")
    sg.add_argument("--one-pass", action="store_true",
                    help="segment the whole volume in one pass instead of sliding windows (models trained with "
                         "--norm batch, channel or none only); faster, but far less accurate for models "
                         "trained on patches smaller than the network's reach (docs/experiments.md)")
    sg.add_argument("--memory-mb", type=float, default=0.0,
                    help="with --one-pass, the activation memory of one pass: larger volumes go in exact tiles "
                         "(default: 0 = half the free GPU memory, or a quarter of RAM up to 4096 on the CPU)")
    sg.add_argument("--overwrite", action="store_true",
                    help="replace existing files in --output that pgl segment did not write (e.g. reference labels)")
    sg.add_argument("--format", choices=("label-map", "seg.nrrd"), default="label-map",
                    help="label-map: a label map in the output's file type (in a folder: the input's) and "
                         "<name>.labels.json; seg.nrrd: a Slicer segmentation <name>.seg.nrrd with named, coloured "
                         "segments and standard terminology for known structures (default: label-map)")
    add_modalities_option(sg)
    add_progress_option(sg)

    sl = sub.add_parser("scan-list", help="what --images would use from a folder tree, and what it skips and why")
    sl.add_argument("--images", required=True, help="folder of scans or DICOM series (searched recursively)")
    add_modalities_option(sl)
    add_progress_option(sl)

    ed = sub.add_parser("export-dataset", help="labelled cases as an nnU-Net v2 raw dataset")
    ed.add_argument("--images", default="", help="folder of scans (with --labels)")
    ed.add_argument("--labels", default="",
                    help="folder of label maps or Slicer .seg.nrrd files, named like their scans")
    ed.add_argument("--dataset", default="", help="a dataset.json listing the cases (instead of --images/--labels)")
    ed.add_argument("--format", choices=("nnunet",), default="nnunet", help="nnunet: nnU-Net v2's raw-dataset layout")
    ed.add_argument("--out", required=True, help="folder the dataset folder goes into (e.g. nnUNet_raw)")
    ed.add_argument("--name", required=True, help="dataset name: the folder is DatasetNNN_NAME")
    ed.add_argument("--id", type=int, required=True, help="nnU-Net dataset ID, 1-999")
    ed.add_argument("--label-names", nargs="+", default=[], metavar="NAME",
                    help="names of label values 1, 2, ... (default: dataset.json, the label maps' .labels.json, "
                         "the segments' names)")
    ed.add_argument("--keep-case-names", action="store_true",
                    help="name the cases after their scans (default: NAME_001, NAME_002, ...)")
    add_modalities_option(ed)
    add_progress_option(ed)

    ev = sub.add_parser("evaluate", help="Dice and 95%% Hausdorff distance of label maps against references")
    ev.add_argument("--pred", required=True, help="folder of predicted label maps")
    ev.add_argument("--labels", required=True, help="folder of reference label maps (same file names)")
    ev.add_argument("--csv", default="", help="also write per-case, per-label rows to this CSV file")
    ev.add_argument("--overwrite", action="store_true",
                    help="let --csv replace an existing file that is not a previous pgl evaluate CSV")
    add_progress_option(ev)

    from .comparison.experiment import CompareConfig

    cp = sub.add_parser("compare", help="random vs BYOL vs PGL initialisation, paired over seeds, with a report")
    add_dataclass_options(cp, CompareConfig)
    cp.add_argument("--pretrain-option", action="append", default=[], metavar="KEY=VALUE",
                    help="extra pretraining option for every pretrained init, e.g. anti_collapse_weight=0.5")
    cp.add_argument("--finetune-option", action="append", default=[], metavar="KEY=VALUE",
                    help="extra fine-tuning option for every run, e.g. transfer=encoder")
    add_progress_option(cp)

    from .pretraining.check import CheckConfig

    ck = sub.add_parser("check-pretraining", help="did a pretrained model help on your labelled scans? (paired, "
                                                   "leave-one-case-out)")
    add_dataclass_options(ck, CheckConfig)
    add_progress_option(ck)

    ex = sub.add_parser("export", help="write a fine-tuned model in another tool's format (a MONAI Bundle)")
    ex.add_argument("--model", required=True, help="segmentation model folder (from pgl finetune)")
    ex.add_argument("--format", choices=("monai-bundle",), default="monai-bundle",
                    help="monai-bundle: runs with `python -m monai.bundle run`, servable by MONAI Label "
                         "(default: monai-bundle)")
    ex.add_argument("--out", required=True, help="new or empty folder for the export")
    ex.add_argument("--keep-case-names", action="store_true",
                    help="name the cases the model learnt from as they are named (default: case_001, ...)")
    add_progress_option(ex)

    dm = sub.add_parser("demo", help="the quick-start job, about 4 minutes on 2 CPU cores: phantoms -> PGL "
                                     "pretraining -> fine-tuning -> segmentation -> report (the method comparison "
                                     "is `pgl compare`)")
    dm.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    dm.add_argument("--quick", action="store_true", help="the same path at toy sizes, for tests (seconds)")
    dm.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    dm.add_argument("--workers", type=int, default=2, help="data loader workers (default: 2)")
    add_progress_option(dm)
    return parser


def run_phantom(args, progress) -> None:
    if args.family == "heldout":
        from .phantoms.heldout import write_heldout_cohort

        if args.phases != ["venous"]:
            raise PGLError("--phases applies to --family phantom only: the held-out family draws each subject's "
                           "contrast enhancement itself.")
        paths = write_heldout_cohort(args.out, args.count, seed=args.seed, labels=args.labels,
                                     spacing_scale=args.spacing_scale, progress=progress)
        emit(progress, "done", out=str(Path(args.out)), images=len(paths))
        return
    from .phantoms.tuning import write_cohort

    paths = write_cohort(args.out, args.count, labels=args.labels, seed=args.seed,
                         spacing_scale=args.spacing_scale, phases=tuple(args.phases), progress=progress)
    emit(progress, "done", out=str(Path(args.out)), images=len(paths))


def run_pretrain(args, progress) -> None:
    from .pretraining.trainer import pretrain

    options = explicit_options(PretrainConfig, args)  # so that --preset can supply the others
    pretrain(progress=progress, network=dataclass_from_args(NetworkConfig, args), **options)


def show(args, text: str) -> None:
    """Human-readable results on stdout, except in JSON mode where stdout carries only events."""
    if args.progress != "json":
        print(text)


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def explicit_options(cls: type, args: argparse.Namespace) -> dict:
    """The options of `cls` whose value differs from its default (so --init can supply the others)."""
    options = {}
    for f in dataclasses.fields(cls):
        if f.name not in vars(args):
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if _plain(getattr(args, f.name)) != _plain(default):
            options[f.name] = getattr(args, f.name)
    return options


def finetune_options(args: argparse.Namespace) -> dict:
    """`pgl finetune`'s options for finetune(): the network only where given (else from --init, or chosen for the
    budget); without --steps or --minutes neither, so finetune() applies its default time budget."""
    if args.steps is None:
        args.steps = FinetuneConfig.steps
    options = explicit_options(FinetuneConfig, args)
    if explicit_options(NetworkConfig, args):
        options["network"] = dataclass_from_args(NetworkConfig, args)
    return options


def run_finetune(args, progress) -> None:
    from .finetuning.trainer import finetune

    finetune(progress=progress, **finetune_options(args))


def run_segment(args, progress) -> None:
    from .inference.segmentation import segment

    segment(args.model, args.input, args.output, tta=args.tta, largest_component=args.largest_component,
            device=args.device, overlap=args.overlap, sw_batch_size=args.sw_batch_size, progress=progress,
            modalities=tuple(m.upper() for m in args.modalities), overwrite=args.overwrite,
            precision=args.precision, memory_mb=args.memory_mb, one_pass=args.one_pass, output_format=args.format)


def run_scan_list(args, progress) -> None:
    from .data.scan_list import describe_search, scan_listing

    listing = scan_listing(args.images, tuple(m.upper() for m in args.modalities))
    show(args, describe_search(listing))
    emit(progress, "done", **listing)


def run_export_dataset(args, progress) -> None:
    from .export.nnunet import export_dataset

    target = export_dataset(args.out, args.name, args.id, images=args.images or None, labels=args.labels or None,
                            dataset=args.dataset or None, label_names=args.label_names, format=args.format,
                            keep_case_names=args.keep_case_names,
                            modalities=tuple(m.upper() for m in args.modalities), progress=progress)
    show(args, f"{target}: nnU-Net v2 raw dataset written; next: nnUNetv2_plan_and_preprocess -d {args.id} "
               f"--verify_dataset_integrity (with nnUNet_raw={target.parent})")


def run_evaluate(args, progress) -> None:
    from .inference.evaluation import evaluate, format_table

    result = evaluate(args.pred, args.labels, args.csv or None, progress=progress, overwrite=args.overwrite)
    show(args, format_table(result))
    emit(progress, "done", mean=result["mean"], csv=args.csv or None)


def parse_key_values(items: list[str], flag: str) -> dict:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise PGLError(f"{flag} takes KEY=VALUE, got {item!r}.")
        try:
            options[key.strip().replace("-", "_")] = json.loads(value)
        except ValueError:
            options[key.strip().replace("-", "_")] = value
    return options


def run_compare(args, progress) -> None:
    from .comparison.experiment import CompareConfig, compare

    config = dataclass_from_args(CompareConfig, args,
                                 pretrain_options=parse_key_values(args.pretrain_option, "--pretrain-option"),
                                 finetune_options=parse_key_values(args.finetune_option, "--finetune-option"))
    report = compare(config, progress)
    show(args, report.read_text())


def run_check(args, progress) -> None:
    from .pretraining.check import CheckConfig, check_pretraining

    show(args, check_pretraining(dataclass_from_args(CheckConfig, args), progress)["text"])


def run_export(args, progress) -> None:
    from .export.bundle import export_model

    out = export_model(args.model, args.out, format=args.format, keep_case_names=args.keep_case_names,
                       progress=progress)
    show(args, f"{args.format} written to {out}")


def run_demo(args, progress) -> None:
    from .walkthrough import demo

    report = demo(args.out, quick=args.quick, device=args.device, workers=args.workers, progress=progress)
    show(args, report.read_text())


COMMANDS = {"phantom": run_phantom, "pretrain": run_pretrain, "finetune": run_finetune, "segment": run_segment,
            "evaluate": run_evaluate, "scan-list": run_scan_list, "compare": run_compare,
            "check-pretraining": run_check, "demo": run_demo,
            "export-dataset": run_export_dataset, "export": run_export}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    reporter = make_reporter(args.progress)
    code = EXIT_ERROR
    try:
        code = run_command(args, reporter)
        return code
    finally:
        if args.work_dir and (code != 0 or getattr(reporter, "closed", False)):
            remove_work_folder(Path(args.work_dir))


def remove_work_folder(folder: Path) -> None:
    """Nobody will read or remove the caller's work folder now: leave no copy of its (patient) data behind. Only a
    folder the Slicer side made (it holds the record of its processes) is removed, never one a user named."""
    if (folder / WORK_FOLDER_RECORD).is_file():
        shutil.rmtree(folder, ignore_errors=True)


def run_command(args, reporter) -> int:
    """Run the chosen command; the exit code, with failures reported as events or lines."""
    if args.stop_file and Path(args.stop_file).exists():  # stopped before it started: nothing to interrupt
        _report_failure(reporter, "interrupted", "cancelled")
        return EXIT_CANCELLED
    try:
        if args.stop_file:  # inside the try: a stop file appearing at once interrupts at once
            watch_stop_file(args.stop_file)
        COMMANDS[args.command](args, reporter)
    except TrainingInterrupted as e:
        _report_failure(reporter, str(e), "cancelled")
        return EXIT_CANCELLED
    except PGLError as e:
        _report_failure(reporter, str(e), "error")
        return EXIT_ERROR
    except KeyboardInterrupt:
        _report_failure(reporter, "interrupted", "cancelled")
        return EXIT_CANCELLED
    finally:
        if isinstance(reporter, TerminalReporter):
            reporter.close()
    if reporter is None:
        print("done", file=sys.stderr)
    return EXIT_OK


def _report_failure(reporter, message: str, kind: str) -> None:
    if isinstance(reporter, TerminalReporter):
        reporter.close()
    if isinstance(reporter, JsonLinesReporter):
        if kind == "error":
            reporter({"event": "error", "message": message})
            return  # the JSON event is the report; the same line on stderr would reach the GUI log twice
    try:
        print(f"{kind if kind != 'cancelled' else 'stopped'}: {message}", file=sys.stderr)
    except OSError as e:  # stderr closed too: the caller has gone, nobody is left to tell
        if not is_closed_pipe(e):
            raise
