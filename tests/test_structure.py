"""The project's structure, checked: every stage's code dependencies in dvc.yaml cover what its command imports (so
an edit can never leave a stage "up to date" with outputs the new code would not make), the import graph has no
cycles, and imports point down the layers.

The import graph is read from the source (every `import`, those inside functions too), not from a run, so a
command's lazily imported library code counts as what it is: code the stage runs.
"""

from __future__ import annotations

import ast
import shlex
import shutil
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("blip", "flows", "data_contracts")

# Layers, lowest first: a module may import from its own layer and the layers below it, never from above.
LAYERS = [
    ("base", ["blip.config", "blip.layout", "blip.tokenizer", "blip.tracking", "blip.cluster", "blip.launch"]),
    ("data: formats and readers", ["blip.data"]),
    ("models: the shared MED parts and the CapFilt models", ["blip.models"]),
    ("the generic engine, inference and evaluation", ["blip.train", "blip.inference", "blip.evaluate",
                                                     "blip.selection.rule", "blip.selection.config"]),
    ("tasks: each one folder, and their registry", ["blip.tasks"]),
    ("the registry of servable models", ["blip.registry", "blip.registry_config"]),
    ("curation: gates, CapFilt, selection", ["blip.gates", "blip.gates_config", "blip.capfilt", "blip.selection"]),
    ("the pipeline: rounds, contracts, the chains' comparison", ["blip.rounds", "blip.rounds_config",
                                                                "data_contracts", "blip.evaluate.compare"]),
    ("the built-in world: a data source that writes the product's formats", ["blip.world"]),
    ("params.yaml whole: the sections of every layer, put together", ["blip.params"]),
    ("entry points", ["blip.cli", "flows", "data_contracts.__main__"]),
]


def module_files(root: Path) -> dict[str, Path]:
    """{dotted module name: file} of the project's packages under `root`."""
    files = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = path
    return files


def run_nodes(tree: ast.AST):
    """Every node of a module that may run: all but the bodies of `if TYPE_CHECKING:` (imports for hints only)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            todo += node.orelse
        else:
            todo += ast.iter_child_nodes(node)


def imports_of(name: str, path: Path, files: dict[str, Path]) -> set[str]:
    """The project modules `name` imports anywhere in its file (a `from package import module` names the module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def known(candidate: str) -> str | None:
        while candidate and candidate not in files:
            candidate = candidate.rpartition(".")[0]
        return candidate or None

    found = set()
    for node in run_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(filter(None, (known(a.name) for a in node.names)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in files else known(base))
    found.discard(None)
    found.discard(name)
    return found


def graph(root: Path) -> dict[str, set[str]]:
    """{module: the project modules it imports}."""
    files = module_files(root)
    return {name: imports_of(name, path, files) for name, path in files.items()}


def has_code(path: Path) -> bool:
    """Whether a file holds more than a docstring (an empty package marker changes no stage's output)."""
    body = ast.parse(path.read_text()).body
    return any(not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)) for s in body)


def closure(starts: list[str], edges: dict[str, set[str]]) -> set[str]:
    """Every module that importing `starts` runs: their imports, transitively, and each one's parent packages."""
    seen, todo = set(), list(starts)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += edges.get(name, ())
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a and a.b first
    return seen


def cli_commands(root: Path) -> dict[str, str]:
    """The `blip` command table ({command: its module in blip/cli/}) of the project under `root`."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_cli_table", root / "blip" / "cli" / "__init__.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)  # the package's own code imports only the standard library
    return table.COMMANDS


def entry_modules(cmd: str, commands: dict[str, str]) -> list[str]:
    """The modules a stage's command runs: `blip <command>` its command's module (and for a transfer task's
    command, the task's code, which the registry imports by name), `python -m pkg` the package's __main__;
    commands joined with && each count."""
    from blip.tasks.registry import TASKS

    found = []
    for part in cmd.split("&&"):
        words = shlex.split(part.replace("\n", " "), comments=True)
        if words[:1] == ["blip"]:
            args = [w for w in words[1:] if not w.startswith("-") and w != "params.yaml"]
            found += ["blip.cli", f"blip.cli.{commands[args[0]]}"]
            if args[0] in ("downstream", "downstream-data"):
                found.append(TASKS[args[1]].hooks)
        elif words[:2] == ["python", "-m"]:
            found.append(f"{words[2]}.__main__")
        else:
            raise AssertionError(f"a stage command this test does not know how to read: {part.strip()!r}")
    return found


def stages(root: Path) -> dict[str, tuple[str, list[str]]]:
    """{stage: (command, code dependencies)} from dvc.yaml; a foreach stage once per item (its list or mapping
    from params.yaml), ${item} and ${key} filled in."""
    loaded = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((root / "params.yaml").read_text())
    found = {}
    for name, stage in loaded.items():
        body, items = stage.get("do", stage), {None: None}
        if "foreach" in stage:
            each = stage["foreach"]
            if isinstance(each, str):  # ${a.b}: a list or mapping in params.yaml
                each = params
                for part in stage["foreach"].strip("${}").split("."):
                    each = each[part]
            items = dict(each) if isinstance(each, dict) else {item: item for item in each}

        for key, value in items.items():
            def fill(text: str) -> str:
                return text if key is None else text.replace("${key}", str(key)).replace("${item}", str(value))

            deps = [fill(d if isinstance(d, str) else next(iter(d))) for d in body.get("deps", [])]
            code = [d for d in deps if d.split("/")[0] in PACKAGES]
            found[name if key is None else f"{name}@{key}"] = (fill(body["cmd"]), code)
    return found


def uncovered(root: Path) -> dict[str, list[str]]:
    """{stage: project files its command runs that none of its deps (a file, or a folder holding it) covers}."""
    edges, files, commands = graph(root), module_files(root), cli_commands(root)
    missing = {}
    for stage, (cmd, deps) in stages(root).items():
        needed = closure(entry_modules(cmd, commands), edges)
        paths = sorted(str(files[m].relative_to(root)) for m in needed if m in files and has_code(files[m]))
        gaps = [p for p in paths if not any(p == d.rstrip("/") or p.startswith(d.rstrip("/") + "/") for d in deps)]
        if gaps:
            missing[stage] = gaps
    return missing


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: strongly connected groups of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, groups, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return groups


def layer_of(module: str) -> int | None:
    """The layer a module belongs to (its longest matching prefix), None for a module outside the layers."""
    best, depth = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = i, len(prefix)
    return best


def upward_imports(edges: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(importer, imported) pairs where the imported module sits in a higher layer than its importer."""
    found = set()
    for a, targets in edges.items():
        for b in targets:
            la, lb = layer_of(a), layer_of(b)
            if la is not None and lb is not None and lb > la:
                found.add((a, b))
    return found


def test_every_stage_depends_on_the_code_its_command_runs():
    assert uncovered(ROOT) == {}


def test_an_import_added_without_its_dependency_is_caught(tmp_path):
    copy = tmp_path / "project"
    for item in (*PACKAGES, "dvc.yaml", "params.yaml"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, copy / item)
    (copy / "blip" / "new_rule.py").write_text('"""A helper the select stage now uses."""\n\nLIMIT = 3\n')
    select = copy / "blip" / "selection" / "job.py"
    select.write_text(select.read_text() + "\n\ndef _limit() -> int:\n    from blip.new_rule import LIMIT\n\n"
                                           "    return LIMIT\n")
    assert uncovered(copy) == {"select": ["blip/new_rule.py"]}


def missing_modules(root: Path) -> list[str]:
    """'importer -> module' for every import of a project module that does not exist, from the project or its
    tests (in functions too, which importing the file would not run)."""
    files, found = module_files(root), []
    importers = {**files, **{f"tests.{p.stem}": p for p in sorted((root / "tests").glob("*.py"))}}
    for name, path in importers.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                wanted = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                wanted = [node.module]
            else:
                continue
            found += [f"{name} -> {w}" for w in wanted if w.split(".")[0] in PACKAGES and w not in files]
            if isinstance(node, ast.ImportFrom) and node.module in files and files[node.module].name == "__init__.py":
                # `from package import name`: a module of the package, or a name its __init__ defines
                defined = {n.name for n in ast.walk(ast.parse(files[node.module].read_text())) if isinstance(
                    n, (ast.FunctionDef, ast.ClassDef, ast.alias))} | {
                    t.id for n in ast.walk(ast.parse(files[node.module].read_text())) if isinstance(n, ast.Assign)
                    for t in n.targets if isinstance(t, ast.Name)}
                found += [f"{name} -> {node.module}.{a.name}" for a in node.names
                          if f"{node.module}.{a.name}" not in files and a.name not in defined]
    return found


def test_every_import_of_the_project_names_a_module_that_exists():
    assert missing_modules(ROOT) == []


def test_every_module_belongs_to_a_layer():
    assert [m for m in graph(ROOT) if layer_of(m) is None and m not in PACKAGES] == []


def test_the_import_graph_has_no_cycles():
    assert cycles(graph(ROOT)) == []


def test_a_cycle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_point_down_the_layers():
    assert upward_imports(graph(ROOT)) == set()


def test_only_the_command_line_chooses_the_built_in_world():
    # the library runs on a user's data alike: only a command, for a source params leave unset, writes the world
    # (params.yaml's whole schema reads the world's section declaration, and nothing else of it)
    importers = {(a, b) for a, targets in graph(ROOT).items() for b in targets
                 if b.startswith("blip.world") and not a.startswith("blip.world")}
    assert importers and all(a.startswith("blip.cli.") or (a, b) == ("blip.params", "blip.world.config")
                             for a, b in importers), importers


def test_tests_import_no_other_test_module_nor_benchmarks_nor_experiments():
    found = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            found += [f"{path.name}: {n}" for n in names
                      if n.startswith(("tests.test_", "tests.conftest", "bench", "experiments"))]
    assert found == []


def test_no_stage_depends_on_the_experiments():
    assert "experiments/" not in (ROOT / "dvc.yaml").read_text()


def test_command_modules_import_no_library_code_at_their_top():
    # `blip` imports every command's module to build its parser, so what one imports at its top would be code every
    # stage runs, which the deps check (a stage's command module and its closure) would not see: library code is
    # imported inside `run` (blip.params, which every command loads, imports only the sections' declarations)
    allowed = ("blip.cli", "blip.config", "blip.layout", "blip.params")
    found = []
    for path in sorted((ROOT / "blip" / "cli").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in PACKAGES
                      and not any(n == a or n.startswith(a + ".") for a in allowed)]
    assert found == []


def test_every_task_of_the_registry_has_the_code_its_entry_names():
    # the registry is light (each task's params declarations); its code is imported by name when it runs, so the
    # name must hold a module whose hooks match the entry: a transfer task has a stage to run
    from blip.tasks.registry import TASKS, hooks

    for name, task in TASKS.items():
        if task.hooks is None:
            assert not task.transfer, name
            continue
        code = hooks(name)
        assert (code.run is not None) == task.transfer, name
        assert code.run is None or code.metric, name
