"""Dependencies run one way (ARCHITECTURE.md): every import of every module of the product is
read from its source and checked against the layer table below, so a change that makes the
core import the runtime, the runtime import the exporters, or the contract import torch
fails here, by name."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
# source folder -> installed package (pyproject's package-dir)
ROOTS = {"sam2_edge": "sam2_edge", "export": "sam2_edge.export", "quantization": "sam2_edge.quantization",
         "runtimes": "sam2_edge.runtimes", "apps": "apps"}

# module-name prefix -> layer; the longest matching prefix wins
LAYER_OF = {
    "sam2_edge": "base",  # the package itself, errors, configs, progress, prompts, sysinfo
    "sam2_edge.contract": "base",
    "sam2_edge.modeling": "modeling",
    "sam2_edge.checkpoint": "model",
    "sam2_edge.image_predictor": "model",
    "sam2_edge.stages": "model",
    "sam2_edge.runtimes": "runtime",
    "sam2_edge.export": "export",
    "sam2_edge.quantization": "export",
    "sam2_edge.quantization.calibration": "app",  # drives the runtime's tracker over calibration frames
    "sam2_edge.quantization.pipeline": "app",
    "sam2_edge.quantization.executorch_quant": "app",  # the pipeline's flow for ExecuTorch (runs the tracker)
    "sam2_edge.quantization.coreml_quant": "app",  # the pipeline's flow for CoreML (its report and outputs)
    "sam2_edge.quantization.cli": "app",
    "sam2_edge.quantization.speed": "app",  # quantize --bench: runs sam2-edge bench on the new bundle
    "sam2_edge.evaluation": "app",
    "sam2_edge.evaluation.metrics": "base",  # numpy + cv2 only
    "sam2_edge.distill": "app",  # trains students: the model, the runtime tracker, the evaluation
    # the user-facing layer: command line, benchmark, apps
    "sam2_edge.cli": "app",
    "sam2_edge.demo_cli": "app",
    "sam2_edge.bench": "app",
    "sam2_edge.runtimes.cli": "app",
    "sam2_edge.export.cli": "app",
    "apps": "app",
}
# layer -> layers it may import at module level
ALLOWED = {
    "base": {"base"},
    "modeling": {"base", "modeling"},
    "model": {"base", "modeling", "model"},
    "runtime": {"base", "runtime"},
    "export": {"base", "modeling", "model", "export"},
    "app": {"base", "modeling", "model", "runtime", "export", "app"},
}
# imports inside a function (loaded on first use) may also reach these
ALLOWED_LAZY = {
    "runtime": {"model"},  # the torch backend builds the stage modules when it is constructed
}
# layers whose modules must import without torch (torch-free devices)
TORCH_FREE = {"base", "runtime"}


def layer(module: str) -> Optional[str]:
    best = None
    for prefix, lay in LAYER_OF.items():
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, lay)
    return best[1] if best else None


def modules() -> Iterator[Tuple[str, Path]]:
    for folder, package in ROOTS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            yield ".".join([package, *parts]), path


def imports(module: str, path: Path) -> List[Tuple[str, bool, int]]:
    """(imported module, inside a function?, line) of every import statement."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    out = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                out.extend((a.name, lazy, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".")
                    base = base if is_pkg else base[:-1]
                    base = base[:len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if child.module is None or (target in LAYER_OF and target == "sam2_edge"):
                    # `from . import x` / `from sam2_edge import x`: x may be a submodule
                    out.extend((f"{target}.{a.name}" if layer(f"{target}.{a.name}") else target, lazy, child.lineno)
                               for a in child.names)
                else:
                    out.append((target, lazy, child.lineno))
            visit(child, inner)

    visit(tree, False)
    return out


def _violations() -> Dict[str, List[str]]:
    bad: Dict[str, List[str]] = {"direction": [], "torch": []}
    for module, path in modules():
        src_layer = layer(module)
        assert src_layer is not None, f"{module} has no layer: add it to LAYER_OF in {__file__}"
        for target, lazy, line in imports(module, path):
            where = f"{path.relative_to(REPO)}:{line}"
            if src_layer in TORCH_FREE and not lazy and target.split(".")[0] == "torch":
                bad["torch"].append(f"{where}: {module} ({src_layer}) imports torch at module level")
            dst = layer(target)
            if dst is None:
                continue  # third-party or standard library
            ok = ALLOWED[src_layer] | (ALLOWED_LAZY.get(src_layer, set()) if lazy else set())
            if dst not in ok:
                bad["direction"].append(f"{where}: {module} ({src_layer}) imports {target} ({dst})")
    return bad


def test_every_module_has_a_layer_and_imports_only_downwards():
    bad = _violations()
    assert not bad["direction"], "imports against the layer direction:\n" + "\n".join(bad["direction"])


def test_contract_and_runtime_never_import_torch_at_module_level():
    bad = _violations()
    assert not bad["torch"], "\n".join(bad["torch"])


@pytest.mark.parametrize("module,expected", [
    ("sam2_edge.contract.manifest", "base"), ("sam2_edge.runtimes.tracker", "runtime"),
    ("sam2_edge.runtimes.cli", "app"), ("sam2_edge.export.onnx_export", "export"), ("apps.raspi_demo.app", "app"),
])
def test_layer_table(module, expected):
    assert layer(module) == expected


def test_checker_catches_an_upward_import(tmp_path, monkeypatch):
    """The checker itself: a core module importing the runtime, and the contract importing
    torch, are both reported."""
    pkg = tmp_path / "sam2_edge"
    (pkg / "contract").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "stages.py").write_text("from .runtimes.tracker import Tracker\n")
    (pkg / "contract" / "__init__.py").write_text("import torch\n")
    monkeypatch.setitem(globals(), "REPO", tmp_path)
    monkeypatch.setitem(globals(), "ROOTS", {"sam2_edge": "sam2_edge"})
    bad = _violations()
    assert any("sam2_edge.stages (model) imports sam2_edge.runtimes.tracker (runtime)" in b for b in bad["direction"])
    assert any("sam2_edge.contract (base) imports torch" in b for b in bad["torch"])
