"""The engine's layout (docs/code.md): sub-packages by job whose `__init__.py` import nothing, no module named like a
function it defines, and the public names resolving to their documented functions."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "pgl_engine"
SUB_PACKAGES = sorted(p.parent for p in ENGINE.glob("*/__init__.py") if p.parent.name != "__pycache__")


def test_each_sub_package_is_documented_and_its_init_imports_nothing():
    assert {p.name for p in SUB_PACKAGES} >= {"data", "models", "training", "pretraining", "finetuning", "inference"}
    code_map = (ROOT / "docs" / "code.md").read_text()
    for package in SUB_PACKAGES:
        body = ast.parse((package / "__init__.py").read_text()).body
        assert len(body) == 1 and isinstance(body[0].value, ast.Constant), f"{package.name}/__init__.py: docstring only"
        assert f"`{package.name}/`" in code_map, f"docs/code.md does not describe {package.name}/"
        for module in package.glob("*.py"):
            assert f"`{module.stem}`" in code_map or module.stem == "__init__", f"docs/code.md misses {module}"


def test_no_module_defines_a_function_or_class_named_like_itself():
    for path in ENGINE.rglob("*.py"):
        names = {node.name for node in ast.parse(path.read_text()).body
                 if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        assert path.stem not in names, f"{path.relative_to(ROOT)} defines {path.stem}()"


def test_the_public_names_stay_functions_after_every_module_is_imported():
    modules = [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in sorted(ENGINE.rglob("*.py"))
               if p.stem not in {"__init__", "__main__"}]
    probe = (f"import importlib, json, pgl_engine; [importlib.import_module(m) for m in {modules!r}]; "
             "print(json.dumps({n: [callable(getattr(pgl_engine, n)), getattr(pgl_engine, n).__module__] "
             "for n in pgl_engine.__all__ if n != '__version__'}))")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    names = json.loads(result.stdout)
    for name in ("pretrain", "finetune", "segment", "evaluate", "compare", "demo", "load_model"):
        is_callable, module = names[name]
        assert is_callable and module.startswith("pgl_engine."), (name, module)
    assert names["segment"][1] == "pgl_engine.inference.segmentation"
