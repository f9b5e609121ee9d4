"""Run under another Python (the ones Slicer embeds): import the engine and the Slicer-side code, parse every
`pgl <command> --help`. torch and MONAI are stood in for (too heavy to install per Python); so are the Slicer
application modules. numpy, scipy, SimpleITK, pydicom, nibabel, tqdm and safetensors are real; psutil is absent on purpose,
as in Slicer's Python. Prints one JSON line: what was imported and which commands parsed; exits 1 on any failure.
"""
import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import json
import sys
import traceback
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STUBBED = ("torch", "monai", "slicer", "qt", "ctk", "vtk", "PyTorchUtils")


class _AnythingMeta(type):
    def __getattr__(cls, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _AnythingMeta(name, (Anything,), {})

    def __or__(cls, other):
        return cls

    __ror__ = __or__

    def __getitem__(cls, item):
        return cls


class Anything(metaclass=_AnythingMeta):
    """Stands for any class, function, constant or decorator of a stubbed package."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        if len(args) == 1 and not kwargs and callable(args[0]):
            return args[0]  # used as a decorator
        return Anything()

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return Anything()

    def __iter__(self):
        return iter(())

    def __bool__(self):
        return False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def _same(self, *args):
        return self

    __mul__ = __rmul__ = __add__ = __radd__ = __sub__ = __rsub__ = __truediv__ = __or__ = __ror__ = _same
    __getitem__ = _same


class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        value = _AnythingMeta(name, (Anything,), {})
        setattr(self, name, value)
        return value


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in STUBBED:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []
        module.__version__ = "99.0"
        return module

    def exec_module(self, module):
        pass


def module_names():
    engine = sorted(p.relative_to(ROOT).with_suffix("").parts for p in (ROOT / "pgl_engine").rglob("*.py"))
    names = [".".join(parts[:-1] if parts[-1] == "__init__" else parts) for parts in engine if parts[-1] != "__main__"]
    names += [f"PGLCommon.{p.stem}" for p in sorted((ROOT / "PGLCommon").glob("*.py"))]
    for module in ("PGLPretrain", "PGLSegmentation"):
        names += [f"{module}Lib.{p.stem}" for p in sorted((ROOT / module / f"{module}Lib").glob("*.py"))]
        names.append(module)
    return names


def main() -> int:
    sys.meta_path.insert(0, _StubFinder())
    sys.path[:0] = [str(ROOT), str(ROOT / "PGLPretrain"), str(ROOT / "PGLSegmentation")]
    report = {"python": sys.version.split()[0], "imported": [], "failed": {}, "help": [], "psutil": False}
    report["psutil"] = importlib.util.find_spec("psutil") is not None
    for name in module_names():
        try:
            importlib.import_module(name)
            report["imported"].append(name)
        except Exception:
            report["failed"][name] = traceback.format_exc(limit=-3)
    try:
        from pgl_engine.cli import build_parser

        parser = build_parser()
        commands = [""] + sorted(parser._subparsers._group_actions[0].choices)
        for command in commands:
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
                parser.parse_args([command, "--help"] if command else ["--help"])
            if "usage: pgl" in out.getvalue():
                report["help"].append(command or "pgl")
            else:
                report["failed"][f"help {command}"] = out.getvalue()[-500:]
    except Exception:
        report["failed"]["cli"] = traceback.format_exc(limit=-3)
    print(json.dumps(report))
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
