"""The longest functions of the given Python files (name, lines): what issue 38 asks to see before and after.

Usage: python tools/longest_functions.py FILE... [--top N]
"""
from __future__ import annotations

import argparse
import ast
from pathlib import Path


def function_lengths(path: Path) -> list[tuple[str, int]]:
    """(qualified name, line count) of every function and method in `path`, longest first."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((prefix + child.name, child.end_lineno - child.lineno + 1))
                visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")

    visit(tree, "")
    return sorted(found, key=lambda item: -item[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=3)
    args = parser.parse_args(argv)
    for path in args.files:
        lengths = function_lengths(path)
        print(f"{path}: " + ", ".join(f"{name} {lines}" for name, lines in lengths[:args.top]))


if __name__ == "__main__":
    main()
