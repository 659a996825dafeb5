"""The package's import graph, read from the source with `ast`: no cycle, each stage importing
only the stages below it, DALI only in pipelines/ and the loader, and docs/DESIGN.md shows it.

A stage is a folder: tools/ and pipelines/ (installed as alexnet_dali.tools and
alexnet_dali.pipelines) and each subpackage of alexnet_dali/; errors.py and config/ are the leaves
every stage may use. Every import counts, also one inside a function. Regenerate the drawing in
docs/DESIGN.md with `python tests/test_import_graph.py`.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "alexnet_dali"
FOLDERS = {PACKAGE: ROOT / "alexnet_dali", f"{PACKAGE}.tools": ROOT / "tools",
           f"{PACKAGE}.pipelines": ROOT / "pipelines"}
LEAVES = ("errors", "config")  # alexnet_dali/errors.py, alexnet_dali/config/
# Which other stages each stage may import, lowest stage first (the drawing's order, reversed).
MAY_IMPORT = {
    "leaves": (),
    "tools": ("leaves",),
    "pipelines": ("leaves", "tools"),
    "loader": ("leaves", "tools", "pipelines"),
    "model": ("leaves", "tools"),
    "train": ("leaves", "tools", "pipelines", "loader", "model"),
    "use": ("leaves", "tools", "pipelines", "loader", "model", "train"),
    "bench": ("leaves", "tools", "pipelines", "loader", "model", "train"),
    "doctor": ("leaves", "tools", "pipelines", "loader", "model", "train", "bench"),
    "cli": ("leaves", "tools", "pipelines", "loader", "model", "train", "use", "bench", "doctor"),
}
STAGES = tuple(MAY_IMPORT)
DALI_ALLOWED = ("pipelines", "loader")
DESIGN = ROOT / "docs" / "DESIGN.md"
START, END = "<!-- import-graph:start -->", "<!-- import-graph:end -->"


def modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package (subpackages too)."""
    found = {}
    for package, folder in FOLDERS.items():
        nested = package == PACKAGE  # tools/ and pipelines/ are flat; they are not walked twice
        for path in sorted(folder.rglob("*.py") if nested else folder.glob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if nested and parts[0] in ("tools", "pipelines"):
                continue
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            found[".".join((package, *parts))] = path
    return found


def stage(module: str) -> str:
    """The stage a module belongs to (STAGES): its folder below alexnet_dali/, or "leaves"."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in LEAVES:
        return "leaves"
    if parts[1] not in MAY_IMPORT:
        raise AssertionError(f"{module}: not in a stage folder; add its folder to MAY_IMPORT")
    return parts[1]


def imports_of(path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(project modules, top-level external packages) that the file imports anywhere."""
    project, external = set(), set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from pkg import mod` imports a module; `from mod import name` the module itself
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known
                     else node.module for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] == PACKAGE:
                project.add(name)
            else:
                external.add(name.split(".")[0])
    return project, external


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """module -> project modules it imports; module -> external packages it imports."""
    found = modules()
    edges, external = {}, {}
    for module, path in found.items():
        edges[module], external[module] = imports_of(path, set(found))
        edges[module].discard(module)
    return edges, external


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for dep in sorted(edges.get(module, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(edges):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def short(module: str) -> str:
    return module.removeprefix(f"{PACKAGE}.") if module != PACKAGE else PACKAGE


def drawing(edges: dict[str, set[str]]) -> str:
    """The graph as a text block: per stage (highest first) each module and what it imports.

    Imports of the shared leaves (errors, config_types, config, the package's __version__) are
    left out: every stage may use them, and they would be on nearly every line.
    """
    rows = [("stage", "module", "imports (project modules; the leaves are not shown)")]
    for name in reversed(STAGES):
        for module in sorted(m for m in edges if stage(m) == name):
            if module in FOLDERS or (module.count(".") == 1 and not edges[module]):
                continue  # the packages' __init__ files that import nothing
            deps = sorted(short(d) for d in edges[module] if stage(d) != "leaves")
            rows.append((name, short(module), ", ".join(deps) or "-"))
    width = [max(len(row[i]) for row in rows) for i in range(2)]
    lines = [f"{a:<{width[0]}}  {b:<{width[1]}}  {c}".rstrip() for a, b, c in rows]
    return "\n".join(["```text", *lines, "```"])


def test_the_package_has_no_import_cycle():
    edges, _ = graph()
    assert find_cycle(edges) is None, f"import cycle: {' -> '.join(find_cycle(edges))}"


def test_each_stage_imports_only_the_stages_it_may():
    edges, _ = graph()
    refused = [f"{m} ({stage(m)}) -> {d} ({stage(d)})" for m, deps in edges.items() for d in deps
               if stage(d) != stage(m) and stage(d) not in MAY_IMPORT[stage(m)]]
    assert not refused, "imports a stage may not make (MAY_IMPORT):\n" + "\n".join(refused)
    assert edges[f"{PACKAGE}.errors"] == set(), "errors.py must import nothing of the project"
    config = {d for m, deps in edges.items() if m.startswith(f"{PACKAGE}.config") for d in deps}
    assert config <= {f"{PACKAGE}.errors", *(m for m in edges if m.startswith(f"{PACKAGE}.config"))}


def test_may_import_points_down_only_and_names_the_folders():
    """MAY_IMPORT lists each stage below the ones that may import it (no two stages may import
    each other), and its stages are the folders: the subpackages, tools/ and pipelines/."""
    for name, allowed in MAY_IMPORT.items():
        assert all(STAGES.index(other) < STAGES.index(name) for other in allowed), name
    folders = {p.parent.name for p in FOLDERS[PACKAGE].glob("*/__init__.py")}
    assert folders - set(LEAVES) | {"tools", "pipelines"} == set(STAGES) - {"leaves"}


def test_only_the_pipelines_and_the_loader_import_dali():
    _, external = graph()
    dali = sorted(m for m, packages in external.items() if "nvidia" in packages)
    assert dali and all(stage(m) in DALI_ALLOWED for m in dali), dali


def test_the_synthetic_baseline_loads_no_dali():
    """`bench train` without DATA (and a synthetic run) imports these: none may load DALI."""
    import subprocess

    code = ("import sys; import alexnet_dali.bench.train, alexnet_dali.train.builders, "
            "alexnet_dali.train.steps, alexnet_dali.loader.synthetic; "
            "print(sorted(m for m in sys.modules if m.startswith('nvidia.dali')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


TESTS = ROOT / "tests"


def private_uses(path: Path, known: set[str]) -> list[str]:
    """`from project_module import _name` and `project_module._name` in one file (dunders are
    public); project modules are the package's and the tests' own helper modules."""
    tree = ast.parse(path.read_text(), str(path))
    aliases, found = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in known:
                    aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module in known | {PACKAGE}:
            for a in node.names:  # a module, or a class/function of one: both are aliases
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
                if private(a.name):
                    found.append(f"{path.name}:{node.lineno} from {node.module} import {a.name}")
    for node in ast.walk(tree):  # `target = module.Class`: a local name for a project object
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and isinstance(node.value, ast.Attribute)
                and isinstance(node.value.value, ast.Name) and node.value.value.id in aliases):
            aliases[node.targets[0].id] = f"{aliases[node.value.value.id]}.{node.value.attr}"
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and private(node.attr)):
            found.append(f"{path.name}:{node.lineno} {aliases[node.value.id]}.{node.attr}")
        elif (isinstance(node, ast.Call) and len(node.args) >= 2  # (monkeypatch.)setattr(X, "_y")
              and isinstance(node.func, (ast.Name, ast.Attribute))
              and getattr(node.func, "attr", getattr(node.func, "id", "")) in SETATTRS
              and isinstance(node.args[0], ast.Name) and node.args[0].id in aliases
              and isinstance(node.args[1], ast.Constant) and private(str(node.args[1].value))):
            found.append(f"{path.name}:{node.lineno} {aliases[node.args[0].id]}."
                         f"{node.args[1].value}")
    return found


SETATTRS = {"setattr", "getattr", "delattr"}


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_nothing_uses_another_modules_private_names():
    """Neither the package nor the tests reach into a module's `_private` names."""
    found = modules()
    helpers = {p.stem for p in TESTS.glob("*.py")}
    known = set(found) | helpers
    uses = [u for path in [*found.values(), *sorted(TESTS.glob("*.py"))]
            for u in private_uses(path, known - {path.stem})]
    assert not uses, "private names used from another module:\n" + "\n".join(uses)


def test_private_use_finder_finds_planted_uses(tmp_path: Path):
    planted = tmp_path / "planted.py"
    planted.write_text("from alexnet_dali.trainer import _step\n"
                       "from alexnet_dali import synthetic as syn\nsyn._batch(0)\n"
                       "from alexnet_dali.trainer import __doc__\n"
                       "from alexnet_dali.synthetic import Loader\n"
                       "monkeypatch.setattr(Loader, '_batch', None)\nLoader._fixed = 1\n"
                       "target = syn.Writer\nmonkeypatch.setattr(target, '_write', None)\n")
    known = {"alexnet_dali.trainer", "alexnet_dali.synthetic"}
    assert sorted(private_uses(planted, known)) == [
        "planted.py:1 from alexnet_dali.trainer import _step",
        "planted.py:3 alexnet_dali.synthetic._batch",
        "planted.py:6 alexnet_dali.synthetic.Loader._batch",
        "planted.py:7 alexnet_dali.synthetic.Loader._fixed",
        "planted.py:9 alexnet_dali.synthetic.Writer._write"]


def test_package_imports_are_absolute_and_tests_share_helpers_not_test_modules():
    relative = [f"{p.name}:{n.lineno}" for p in modules().values()
                for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.ImportFrom)
                and n.level]
    assert not relative, f"relative imports: {relative}"
    test_modules = {p.stem for p in TESTS.glob("test_*.py")}
    crossing = [f"{p.name} imports {name}" for p in sorted(TESTS.glob("*.py"))
                for name in imports_of(p, set())[1] if name in test_modules]
    assert not crossing, "tests import other test modules (move the helper to helpers.py):\n" \
        + "\n".join(crossing)


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def design_block() -> str:
    text = DESIGN.read_text()
    return text[text.index(START) + len(START):text.index(END)].strip()


def test_design_md_shows_the_current_graph():
    edges, _ = graph()
    assert design_block() == drawing(edges), (
        "docs/DESIGN.md's import graph is out of date: run `python tests/test_import_graph.py`")


if __name__ == "__main__":  # rewrite the drawing in docs/DESIGN.md
    text = DESIGN.read_text()
    block = drawing(graph()[0])
    text = re.sub(f"{re.escape(START)}.*{re.escape(END)}", lambda _: f"{START}\n{block}\n{END}",
                  text, flags=re.S)
    DESIGN.write_text(text)
    print(block, file=sys.stdout)
