"""Command-line options generated from the config dataclasses, so the CLI and the API cannot drift."""
from __future__ import annotations

import argparse
import dataclasses
import typing


def add_dataclass_options(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One option per field: --field-name, typed from the annotation, help and default from the field; fields
    marked experimental go to their own group of --help."""
    hints = typing.get_type_hints(cls)
    experimental = None
    for f in dataclasses.fields(cls):
        if f.name in skip or "help" not in f.metadata or dataclasses.is_dataclass(hints[f.name]):
            continue
        target = parser
        if f.metadata.get("experimental"):
            if experimental is None:
                experimental = parser.add_argument_group(
                    "experimental", "options measured not to help on the phantoms (docs/experiments.md); kept for "
                                   "experiments")
            target = experimental
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f.metadata["help"]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if hint is bool:
            if default:
                target.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false",
                                    help=help_text)
            else:
                target.add_argument(flag, dest=f.name, action="store_true", help=help_text)
        elif origin is typing.Literal:
            target.add_argument(flag, dest=f.name, choices=args, default=default,
                                help=f"{help_text} (default: {default})")
        elif origin is tuple:
            kind = args[0]
            # (x, ...) takes any number of values, none included; (x, x, x) takes 1 or 3
            nargs = "*" if Ellipsis in args else "+" if len(args) == 3 else len(args)
            target.add_argument(flag, dest=f.name, type=kind, nargs=nargs, default=default,
                                required=f.metadata.get("required", False),
                                help=f"{help_text} (default: {' '.join(map(str, default)) or 'none'})")
        else:
            target.add_argument(flag, dest=f.name, type=hint, default=default,
                                required=f.metadata.get("required", False),
                                help=help_text + ("" if f.metadata.get("required") else f" (default: {default})"))


def dataclass_from_args(cls: type, args: argparse.Namespace, **extra):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in vars(args).items() if k in names}, **extra)
