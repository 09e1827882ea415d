"""The module and the engine run in Slicer 5.8's Python (3.9.10; Slicer/Slicer v5.8.0 CMakeLists.txt
Slicer_REQUIRED_PYTHON_VERSION) and later: vermin checks the language and library features, and annotations that
only Python 3.10 can evaluate (``X | None``) are deferred in every file that has them."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[2] / "LDCTDenoise"
PYTHON_FILES = sorted(path for path in MODULE_DIR.rglob("*.py") if "egg-info" not in path.parts[-2])


def test_vermin_finds_nothing_that_needs_more_than_python_3_9():
    pytest.importorskip("vermin")
    result = subprocess.run([str(Path(sys.executable).with_name("vermin")), "-t=3.9-", "--no-tips", "--violations",
                             "--eval-annotations", "--no-parse-comments", str(MODULE_DIR)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def evaluated_union_annotations(path: Path) -> list[int]:
    """Lines of annotations written ``X | Y`` that Python evaluates when the file is imported (no
    ``from __future__ import annotations``): a TypeError on 3.9. vermin cannot tell these from deferred ones."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if any(isinstance(node, ast.ImportFrom) and node.module == "__future__"
           and any(alias.name == "annotations" for alias in node.names) for node in tree.body):
        return []
    annotations = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args
            annotations += [a.annotation for a in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                                                   arguments.vararg, arguments.kwarg) if a and a.annotation]
            annotations.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
    return sorted({annotation.lineno for annotation in annotations if annotation is not None
                   for part in ast.walk(annotation) if isinstance(part, ast.BinOp) and isinstance(part.op, ast.BitOr)})


def test_no_file_evaluates_a_union_annotation_at_import():
    offending = {str(path.relative_to(MODULE_DIR)): lines for path in PYTHON_FILES
                 if (lines := evaluated_union_annotations(path))}
    assert not offending


def test_the_union_check_finds_what_python_3_9_would_refuse(tmp_path):
    evaluated = tmp_path / "evaluated.py"
    evaluated.write_text("def f(x: int | None) -> None:\n    pass\n")
    deferred = tmp_path / "deferred.py"
    deferred.write_text("from __future__ import annotations\n\n\ndef f(x: int | None) -> None:\n    pass\n")
    assert evaluated_union_annotations(evaluated) == [1] and evaluated_union_annotations(deferred) == []
