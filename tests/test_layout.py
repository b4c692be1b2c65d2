"""The package layout is checked, not hoped for: imports run one way (import-linter, see
pyproject.toml), no stage imports convergent inside a function body, and docs/architecture.md
names every module that exists."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "convergent"


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_convergent_import_inside_a_function_body():
    found = []
    for path in _modules():
        tree = ast.parse(path.read_text(), filename=str(path))
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module or ""]
                elif isinstance(node, ast.ImportFrom):
                    names = ["."]
                if any(n == "convergent" or n.startswith("convergent.") or n == "." for n in names):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == [], f"imports of convergent inside functions: {found}"


def test_the_layer_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_architecture_doc_names_every_module():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    missing = []
    for path in _modules():
        rel = path.relative_to(SRC.parent).as_posix()
        if path.name == "__init__.py" and path.parent != SRC:
            rel = rel[: -len("/__init__.py")] + "/__init__.py"
        if f"`{rel}`" not in doc:
            missing.append(rel)
    assert missing == [], f"modules missing from docs/architecture.md: {missing}"
