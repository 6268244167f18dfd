"""The package's layering, checked on the source: every import, including those inside functions.

model     the model record         imports: model, errors
job       the scoring job's core   imports: job, model, errors; never ray, never torch
edge      the Ray edge             imports: edge, job, model, errors; never the run above it
run       the run                  imports: run, edge, job, model, analysis, errors
analysis  stats, report, evaluate  imports: analysis, job, model, errors
export    torch and transformers live here and nowhere else; imports: export, job, model, errors
ray       only in edge/, ops/submit.py (job submission) and devtools/ray_floor.py (the benchmark of Ray itself)
"""

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "emonet_batch"
TORCH_SIDE = {"torch", "transformers", "onnx", "onnxconverter_common"}
#: The modules outside edge/ that may import ray: job submission, and the benchmark's plan of Ray Data alone.
RAY_OUTSIDE_EDGE = {"ops/submit.py", "devtools/ray_floor.py"}
#: Subpackage -> the emonet_batch subpackages and modules it may import.
ALLOWED = {
    "model": {"model", "errors"},
    "job": {"job", "model", "errors"},
    "edge": {"edge", "job", "model", "errors"},
    "run": {"run", "edge", "job", "model", "analysis", "errors"},
    "analysis": {"analysis", "job", "model", "errors"},
    "export": {"export", "job", "model", "errors"},
}


def imports(path: Path) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in a package module, relative ones resolved."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = parts if path.name == "__init__.py" else parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.append((module, node.lineno))
            if not node.module:  # `from . import x`: x may be a module
                found += [(f"{module}.{alias.name}", node.lineno) for alias in node.names]
    return found


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def where(path: Path) -> str:
    """The subpackage (or top-level module name) a file belongs to."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def violations(path: Path) -> list[str]:
    layer = where(path)
    found = []
    for module, line in imports(path):
        top, _, rest = module.partition(".")
        label = f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
        if top in TORCH_SIDE and layer != "export":
            found.append(f"{label} (torch side outside export/)")
        if top == "ray" and layer != "edge" and path.relative_to(PACKAGE).as_posix() not in RAY_OUTSIDE_EDGE:
            found.append(f"{label} (ray outside the Ray edge and job submission)")
        if top == "emonet_batch" and layer in ALLOWED and rest:
            target = rest.split(".", 1)[0]
            is_module = (PACKAGE / target).is_dir() or (PACKAGE / f"{target}.py").is_file()
            if is_module and target not in ALLOWED[layer]:
                found.append(f"{label} ({layer}/ may not import {target})")
    return found


def test_every_module_keeps_to_its_layer():
    problems = [v for path in modules() for v in violations(path)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("layer", "source", "expected"),
    [
        ("job", "import ray\n", "ray outside"),
        ("job", "def f():\n    import torch\n", "torch side"),
        ("job", "from ..run import score\n", "job/ may not import run"),
        ("edge", "def f():\n    from ..run.score import run_score\n", "edge/ may not import run"),
        ("model", "from ..job import rows\n", "model/ may not import job"),
    ],
)
def test_the_check_sees_a_forbidden_import(tmp_path, monkeypatch, layer, source, expected):
    """The same check on a planted module: it must fail, including for imports inside functions."""
    root = tmp_path / "emonet_batch"
    for subpackage in (p for p in PACKAGE.iterdir() if p.is_dir()):
        (root / subpackage.name).mkdir(parents=True)
    planted = root / layer / "planted.py"
    planted.write_text(source, encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", root)
    assert any(expected in v for v in violations(planted))
