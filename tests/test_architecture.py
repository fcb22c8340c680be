"""The house rule (docs/ARCHITECTURE.md): each folder of maskds imports only the folders below it."""
from __future__ import annotations

import ast
from pathlib import Path

import maskds

# The floors, bottom up, in the order data flows: a module may import its own folder and the folders below.
FLOORS = ["core", "synth", "data", "config", "model", "training", "evaluation", "inference", "external",
          "tuning", "cli"]
PACKAGE = Path(maskds.__file__).parent


def _imports(path: Path, package: Path = PACKAGE) -> list[tuple[int, str]]:
    """The maskds modules `path` imports (absolute or relative, at any depth of the file), with their lines."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = path.relative_to(package.parent).with_suffix("").parts
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            names = [name] + [f"{name}.{a.name}" for a in node.names]
            found += [(node.lineno, n) for n in names if n.startswith("maskds.")]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("maskds.")]
    return found


def _floor(dotted: str) -> str | None:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in FLOORS else None


def arrows_up(package: Path = PACKAGE) -> list[str]:
    """Every import of the package folder `package` that runs from a floor to one above it, as
    'file:line imports module'."""
    bad = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        if len(rel.parts) == 1:
            continue  # maskds/__init__.py
        floor = rel.parts[0]
        for line, name in _imports(path, package):
            target = _floor(name)
            if target is not None and FLOORS.index(target) > FLOORS.index(floor):
                bad.append(f"{rel}:{line} imports {name}")
    return bad


def test_every_folder_is_a_floor():
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert folders == sorted(FLOORS)
    assert [p.name for p in PACKAGE.glob("*.py")] == ["__init__.py"]


def test_no_import_runs_up_a_floor():
    assert arrows_up() == []


def test_data_imports_only_core():
    allowed = {"core", "data"}
    bad = [f"{p.name}:{line} {n}" for p in (PACKAGE / "data").glob("*.py")
           for line, n in _imports(p) if _floor(n) not in allowed]
    assert bad == []


def test_inference_imports_no_training_module():
    bad = [f"{p.name}:{line} {n}" for p in (PACKAGE / "inference").glob("*.py")
           for line, n in _imports(p) if _floor(n) == "training"]
    assert bad == []


def test_the_check_sees_an_upward_import(tmp_path):
    """The checker itself, on a package of its own: a core module importing training (relatively, inside a
    function) and a data module importing inference are arrows up; training importing core is not."""
    fake = tmp_path / "maskds"
    for floor in ("core", "data", "training", "inference"):
        (fake / floor).mkdir(parents=True)
        (fake / floor / "__init__.py").write_text("")
    (fake / "core" / "probe.py").write_text("def f():\n    from ..training import fit  # noqa\n")
    (fake / "data" / "probe.py").write_text("import maskds.inference.predict  # noqa\n")
    (fake / "training" / "probe.py").write_text("from maskds.core.labels import HEAD_NAMES  # noqa\n")
    bad = arrows_up(fake)
    assert any(b.startswith("core/probe.py:2 imports maskds.training") for b in bad), bad
    assert any(b.startswith("data/probe.py:1 imports maskds.inference") for b in bad), bad
    assert not any(b.startswith("training/") for b in bad), bad
