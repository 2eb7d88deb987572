"""The shape of the code, held by tests: no import cycle, layers that point down, every command-line
option declared once, the folders' file names spelled in layout.py alone, and tests that share helpers
through helpers.py and fixtures through conftest.py."""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from sentitune.cli import build_parser

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sentitune"
TESTS = Path(__file__).resolve().parent

# Options that share a name across commands but mean something else in each (so each has its own
# declaration); any other option must come from one declaration, whichever commands take it.
SAME_NAME_OTHER_MEANING = {
    "--accelerator-count": "GPUs of each training replica; of each serving replica",
    "--accelerator-type": "a training replica's GPU (default T4, the walkthrough's); a serving replica's (default none)",
    "--backend": "deploy serves the int8 export by default; evaluate, predict and serve run PyTorch",
    "--batch-size": "train's optimiser batch; evaluate's and predict's inference batch; tune's values to try",
    "--class-weights": "train defaults to none (the walkthrough), the baseline to auto",
    "--data": "train's and baseline's prepared folder; evaluate's labelled file",
    "--dry-run": "train runs one step; the cloud commands print their requests",
    "--epochs": "train's epochs; tune's range to search",
    "--format": "prepare's split format; export's model format",
    "--job-dir": "train's run folder (Vertex AI's AIP_MODEL_DIR when unset); the baseline's, required",
    "--keep-layers": "train's layers kept; tune's values to try",
    "--learning-rate": "train's learning rate; tune's range to search",
    "--machine-type": "a training machine for jobs; a serving machine for endpoints",
    "--output-dir": "prepare's splits, evaluate's metrics, export's ONNX folder",
    "--seed": "prepare's split; train's initialisation, dropout and data order",
    "--warmup-ratio": "train's warm-up; tune's range to search",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The sentitune modules a module imports, at any depth (function-level imports too)."""
    found = set()
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sentitune")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sentitune"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules}
    # `from sentitune import LABELS` reads the package's constants; its lazy attributes are not imports
    return found - {"sentitune"}


def import_graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py") if module_name(p) != "sentitune"}


def test_no_import_cycle():
    graph = import_graph()
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_layers_point_down():
    graph = import_graph()
    users = [m for m, deps in graph.items() if "sentitune.cli" in deps]
    assert users == ["sentitune.__main__"], "nothing but `python -m sentitune` imports the CLI"
    assert "sentitune.predict" not in graph["sentitune.train"], "training does not import prediction"
    assert "sentitune.predict" not in graph["sentitune.export"]
    assert "sentitune.export" not in graph["sentitune.predict"]
    commands = {
        f"sentitune.{c}" for c in ("prepare", "train", "evaluate", "predict", "export", "serve", "baseline")
    }
    for command in sorted(commands):  # what two commands share lives in a library module below both
        assert not graph[command] & commands, f"{command} imports {sorted(graph[command] & commands)}"
    light = {"sentitune.config", "sentitune.cloud.config", "sentitune.errors"}
    for module in light:  # the parser is built from these: they must not pull in a command's module
        commands = {"sentitune.train", "sentitune.predict", "sentitune.serve", "sentitune.export"}
        assert not graph[module] & commands, module


def subparsers(parser: argparse.ArgumentParser, prefix: str = ""):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from subparsers(sub, f"{prefix}{name} ")
    yield prefix.strip(), parser


def test_every_option_is_declared_once():
    sites, commands = defaultdict(set), defaultdict(set)
    undeclared = []
    for command, parser in subparsers(build_parser()):
        for action in parser._actions:
            flags = [o for o in action.option_strings if o.startswith("--")]
            if not flags or flags[0] in ("--help", "--quiet", "--verbose", "--version"):
                continue
            if not hasattr(action, "declared_at"):
                undeclared.append(f"{command} {flags[0]}")
                continue
            for flag in flags:
                sites[flag].add(action.declared_at)
                commands[flag].add(command)
    assert not undeclared, f"options not derived from a config dataclass: {undeclared}"
    repeated = {f: sorted(s) for f, s in sites.items() if len(s) > 1 and f not in SAME_NAME_OTHER_MEANING}
    assert not repeated, f"declared more than once (declare it once in config.py and reuse it): {repeated}"
    stale = [f for f in SAME_NAME_OTHER_MEANING if len(sites.get(f, ())) < 2]
    assert not stale, f"no longer declared twice; drop from SAME_NAME_OTHER_MEANING: {stale}"
    # The shared ones really are shared: one declaration, several commands.
    for flag in ("--text-column", "--label-column", "--overwrite", "--device", "--precision", "--project"):
        assert len(sites[flag]) == 1 and len(commands[flag]) >= 3, (flag, commands[flag])


def test_every_command_takes_quiet_and_verbose():
    for command, parser in subparsers(build_parser()):
        if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            continue  # a group (sentitune, cloud): its commands take them
        flags = {o for a in parser._actions for o in a.option_strings}
        assert {"-q", "--quiet", "-v", "--verbose"} <= flags, command


def test_help_is_grouped_and_quotes_no_measurements():
    import re

    for command, parser in subparsers(build_parser()):
        text = parser.format_help()
        assert not re.search(r"\d[\d,.]* (tweets|examples)/s|\d+ minutes|fastest", text), command
        if command in ("train", "predict", "serve"):
            assert "runtime:" in text, command


def test_readme_is_short_and_its_architecture_list_names_every_module():
    readme = (PACKAGE.parents[1] / "README.md").read_text(encoding="utf-8")
    assert len(readme.split()) <= 2000, (
        f"README.md has {len(readme.split())} words (as wc -w counts); the cap is 2,000"
    )
    listing = re.search(r"## Architecture.*?```\n(.*?)```", readme, flags=re.DOTALL).group(1)
    top, _, cloud_part = listing.partition("\n  cloud/")
    for folder, text in ((PACKAGE, top), (PACKAGE / "cloud", cloud_part)):
        named = set(re.findall(r"\b(\w+\.py)\b", text))
        modules = {p.name for p in folder.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
        assert modules <= named, f"missing from README's architecture list: {sorted(modules - named)}"
        assert named <= modules, (
            f"README's architecture list names what does not exist: {sorted(named - modules)}"
        )


def forbidden_test_imports(source: str) -> set[str]:
    """What `source` imports, at any depth, that a test module must not: conftest or a test module."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return {name for name in names if name == "conftest" or name.startswith("test_")}


def test_tests_share_helpers_through_helpers_py_and_never_import_a_test_module_or_conftest():
    sample = "from conftest import cli\nimport helpers\n\ndef f():\n    from test_serve import serving\n"
    assert forbidden_test_imports(sample) == {"conftest", "test_serve"}
    found = {
        path.name: sorted(names)
        for path in sorted(TESTS.glob("*.py"))
        if (names := forbidden_test_imports(path.read_text(encoding="utf-8")))
    }
    assert not found, (
        f"test modules import conftest or other test modules: {found}; "
        "move shared helpers to tests/helpers.py and fixtures to tests/conftest.py"
    )


def layout_names() -> dict[str, object]:
    from sentitune import layout

    return {name: value for name, value in vars(layout).items() if name.isupper()}


def layout_file_names() -> set[str]:
    """The file names of the prepared and the run folder that are sentitune's own (transformers' names of
    any model folder, config.json and the rest, are spelled wherever a model folder is loaded)."""
    found = set()
    for value in layout_names().values():
        values = value.values() if isinstance(value, dict) else value if isinstance(value, tuple) else [value]
        found |= {v for v in values if isinstance(v, str) and "." in v}
    return found - set(layout_names()["TRANSFORMERS_FILES"])


# storage's marks of folders written before .sentitune-output.json name the files of earlier versions: a
# record of the past, which a renaming in layout.py must not change.
HISTORIC_NAMES = {("storage.py", "_LEGACY_MARKS")}


def spelled_file_names(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, name) of each string in `source` that is one of `names` or a path with one of them in it;
    prose that mentions a name (a docstring, a message) is not a spelling of it."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            parts = set(re.split(r"[/\\]", node.value))
            found += [(node.lineno, name) for name in sorted(names & parts)]
    return found


def test_the_folders_file_names_are_spelled_in_layout_only():
    names = layout_file_names()
    assert {"run_config.json", "prepare_report.json", "metrics.json", "report.html", "model.onnx"} <= names
    sample = 'A = "metrics.json"\nB = f"{d}/run_config.json"\n"""Writes metrics.json last."""\nC = "x.json"\n'
    assert spelled_file_names(sample, names) == [(1, "metrics.json"), (2, "run_config.json")]
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "layout.py":
            continue
        source = path.read_text(encoding="utf-8")
        historic = {  # the lines of the assignments HISTORIC_NAMES allows
            line
            for node in ast.parse(source).body
            if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and (path.name, t.id) in HISTORIC_NAMES for t in node.targets)
            for line in range(node.lineno, node.end_lineno + 1)
        }
        spelled = [(line, name) for line, name in spelled_file_names(source, names) if line not in historic]
        if spelled:
            found[str(path.relative_to(PACKAGE))] = spelled
    assert not found, f"file names spelled outside layout.py (import them from sentitune.layout): {found}"


def test_layout_names_are_imported_from_layout_and_it_imports_nothing():
    names = set(layout_names())
    elsewhere = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.ImportFrom)
                and (node.module or "").startswith("sentitune")
                and node.module != "sentitune.layout"
            ):
                taken = sorted(names & {a.name for a in node.names})
                if taken:
                    elsewhere[f"{path.relative_to(PACKAGE)} (from {node.module})"] = taken
    assert not elsewhere, f"import these from sentitune.layout: {elsewhere}"
    tree = ast.parse((PACKAGE / "layout.py").read_text(encoding="utf-8"))
    imported = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert [getattr(node, "module", None) for node in imported] == ["__future__"]
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, sentitune.layout; print(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    heavy = {"torch", "transformers", "numpy", "pandas", "huggingface_hub"}
    assert not heavy & {m.split(".")[0] for m in loaded}
    assert {m for m in loaded if m.startswith("sentitune")} == {"sentitune", "sentitune.layout"}


def test_the_package_functions_stay_functions_after_their_modules_load():
    # `sentitune.train(...)` as the README shows it: the first access imports sentitune.train, which makes
    # the package's `train` that module unless the function replaces it; ask twice, in a fresh interpreter
    code = (
        "import sentitune, inspect\n"
        "for name in ('prepare', 'train', 'evaluate', 'distill', 'select', 'Predictor'):\n"
        "    first, second = getattr(sentitune, name), getattr(sentitune, name)\n"
        "    assert first is second and not inspect.ismodule(second), (name, second)\n"
        "    assert callable(second)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
