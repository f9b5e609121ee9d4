"""`pgl` command line: phantom | pretrain (more commands join as the engine grows)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .cli_options import add_dataclass_options, dataclass_from_args
from .config import NetworkConfig, PretrainConfig
from .errors import PGLError, TrainingInterrupted
from .progress import JsonLinesReporter, TerminalReporter, emit

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--progress", choices=("auto", "bar", "json", "none"), default="auto",
                        help="bar on a terminal, json = one JSON event per line on stdout (default: auto)")


def make_reporter(mode: str):
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "none"
    return {"bar": TerminalReporter, "json": JsonLinesReporter}.get(mode, lambda: None)()


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
    add_progress_option(ph)

    pt = sub.add_parser("pretrain", help="self-supervised pretraining (PGL or BYOL) on a folder of scans")
    add_dataclass_options(pt, PretrainConfig)
    net = pt.add_argument_group("network")
    add_dataclass_options(net, NetworkConfig)
    add_progress_option(pt)
    return parser


def run_phantom(args, progress) -> None:
    from .phantom import write_cohort

    paths = write_cohort(args.out, args.count, labels=args.labels, seed=args.seed,
                         spacing_scale=args.spacing_scale, progress=progress)
    emit(progress, "done", out=str(Path(args.out)), images=len(paths))


def run_pretrain(args, progress) -> None:
    from .pretrain import pretrain

    network = dataclass_from_args(NetworkConfig, args)
    pretrain(dataclass_from_args(PretrainConfig, args, network=network), progress=progress)


COMMANDS = {"phantom": run_phantom, "pretrain": run_pretrain}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    reporter = make_reporter(args.progress)
    try:
        COMMANDS[args.command](args, reporter)
    except TrainingInterrupted as e:
        _report_failure(reporter, str(e), "cancelled")
        return EXIT_INTERRUPTED
    except PGLError as e:
        _report_failure(reporter, str(e), "error")
        return EXIT_ERROR
    except KeyboardInterrupt:
        _report_failure(reporter, "interrupted", "cancelled")
        return EXIT_INTERRUPTED
    finally:
        if isinstance(reporter, TerminalReporter):
            reporter.close()
    if reporter is None:
        print("done", file=sys.stderr)
    return 0


def _report_failure(reporter, message: str, kind: str) -> None:
    if isinstance(reporter, TerminalReporter):
        reporter.close()
    if isinstance(reporter, JsonLinesReporter):
        if kind == "error":
            reporter({"event": "error", "message": message})
    print(f"{kind if kind != 'cancelled' else 'stopped'}: {message}", file=sys.stderr)
