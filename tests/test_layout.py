"""The code's layout, read from the source: no import cycle in src/, the run-folder contract spelled only in
foldstack/runs.py, thin pipelines/ doors, modules and functions of a readable size."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from foldstack import runs
from tests.conftest import REPO

SRC = REPO / "src"
PIPELINES = REPO / "pipelines"
MAX_MODULE_LINES = 425  # the "~400": runs.py (the contract's one home) and artifacts.py are 423-425
MAX_FUNCTION_LINES = 60

# file names the contract does not own: Kaggle's own metadata and credential files, the data folder's
# synthetic.json, a config file's suffix, the set writer's mechanics
NOT_RUN_ARTIFACTS = {
    "dataset-metadata.json",
    "kernel-metadata.json",
    "kaggle.json",
    "credentials.json",
    "synthetic.json",
}


def _modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        name = ".".join(p.with_suffix("").relative_to(SRC).parts).removesuffix(".__init__")
        out[name] = p
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every foldstack module `name` imports, at module level or inside a function (a cycle through a
    deferred import is still a cycle), packages' __init__ left out."""
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            names = [base, *(f"{base}.{a.name}" for a in node.names)]
        else:
            continue
        found |= {n for n in names if n in modules and n != name and modules[n].name != "__init__.py"}
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    out: list[list[str]] = []

    def visit(u: str, path: list[str]) -> None:
        state[u] = 1
        path.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                out.append([*path[path.index(v) :], v])
            elif v not in state:
                visit(v, path)
        path.pop()
        state[u] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    return out


def test_no_import_cycle_in_src():
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    assert graph["foldstack.submit.flows"], "the import walk found nothing: it is broken"
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def _docstring_ids(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def _artifact_names() -> set[str]:
    """Every file name of the contract: runs.py's constants that name a file."""
    names = {v for k, v in vars(runs).items() if k.isupper() and isinstance(v, str) and "." in v}
    return (names | {runs.CHECKPOINT_SUFFIX.lstrip(".")}) - NOT_RUN_ARTIFACTS


def contract_spellings(path: Path) -> list[str]:
    """Where a module spells a run-folder file name or builds a runs/ or submissions/ path itself: a
    string (not a docstring, not prose) equal to a contract file name or ending in /<name>, a path that
    starts with runs/ or submissions/, or Path('runs') / Path('submissions')."""
    names, roots = _artifact_names(), (runs.RUNS_DIR, runs.SUBMISSIONS_DIR)
    tree = ast.parse(path.read_text())
    skip = _docstring_ids(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Path" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and arg.value in roots:
                found.append(f"{path.name}:{node.lineno}: Path({arg.value!r})")
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in skip:
            continue
        s = node.value
        if not s or any(c.isspace() for c in s):
            continue  # prose (an error message naming a file for the user) is not a path
        if (
            s in names
            or any(s.endswith("/" + n) or (s.endswith(n) and s.startswith(("*", "."))) for n in names)
            or s.startswith(tuple(f"{r}/" for r in roots))
        ):
            found.append(f"{path.name}:{node.lineno}: {s!r}")
    return found


def test_only_runs_py_spells_the_run_folder_contract():
    files = [p for p in [*SRC.rglob("*.py"), *PIPELINES.glob("*.py")] if p != SRC / "foldstack" / "runs.py"]
    assert len(files) > 40
    found = [hit for p in sorted(files) for hit in contract_spellings(p)]
    assert found == []


def test_the_contract_check_sees_a_spelled_name(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text(
        '"""Writes metrics.json (a docstring may say so)."""\n'
        'A = "metrics.json"\nB = run / "oof.parquet"\nC = Path("runs") / comp\nD = "runs/isic2024/oof"\n'
        'E = "*/test.parquet"\nF = f"error: {p} has no metrics.json"\n'
    )
    hits = contract_spellings(planted)
    assert sorted(int(h.split(":")[1]) for h in hits) == [2, 3, 4, 5, 6], hits


def _door_calls(path: Path) -> list[str]:
    """What a door's main calls besides argparse: the names of the called functions."""
    tree = ast.parse(path.read_text())
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    calls = []
    for node in ast.walk(main):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "?")
            if name not in {"add_argument", "parse_args", "base_parser", "error", "ArgumentParser"}:
                calls.append(name)
    return calls


@pytest.mark.parametrize("door", sorted(p.name for p in PIPELINES.glob("*.py")))
def test_every_pipeline_is_a_thin_door(door):
    """A door parses its arguments and calls one library function (plus plain conversions of its
    arguments); its own functions are main alone."""
    path = PIPELINES / door
    tree = ast.parse(path.read_text())
    defs = [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)]
    assert defs == ["main"], defs
    conversions = {"Path", "resolve", "LoadBench", "submit_parser", "own_runs_root", "available_cores"}
    work = [c for c in _door_calls(path) if c not in conversions]
    assert len(work) == 1, work


def test_tests_import_the_library_not_the_doors():
    offenders = []
    for p in sorted((REPO / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipelines"):
                offenders.append(f"{p.name}:{node.lineno}")
            if isinstance(node, ast.Import) and any(a.name.startswith("pipelines") for a in node.names):
                offenders.append(f"{p.name}:{node.lineno}")
    assert offenders == []


def _sizes() -> tuple[list[str], list[str]]:
    big_modules, long_functions = [], []
    for p in sorted([*SRC.rglob("*.py"), *PIPELINES.glob("*.py")]):
        text = p.read_text()
        n = len(text.splitlines())
        if n > MAX_MODULE_LINES:
            big_modules.append(f"{p.relative_to(REPO)} {n}")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{p.relative_to(REPO)}:{node.name} {length}")
    return big_modules, long_functions


def test_modules_and_functions_stay_readable():
    big_modules, long_functions = _sizes()
    assert big_modules == [], f"modules over {MAX_MODULE_LINES} lines"
    assert long_functions == [], f"functions over {MAX_FUNCTION_LINES} lines"
