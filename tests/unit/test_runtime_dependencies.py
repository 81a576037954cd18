"""`make run` installs the package without its test extras: every third-party module the
server imports must come from its runtime dependencies (or theirs). A module that only the
test extras bring in passes the whole suite and breaks the quick start on a fresh machine."""

import ast
import importlib.metadata as metadata
import sys
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def imported_top_level_modules() -> set[str]:
    modules = set()
    for path in (ROOT / "tessera").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"tessera"}


def _name(requirement: Requirement) -> str:
    return requirement.name.lower().replace("_", "-")


def runtime_closure() -> set[str]:
    """The distributions `pip install .` brings in: the declared dependencies with their
    extras, and recursively theirs, as their markers select them on this interpreter."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [Requirement(text) for text in project["dependencies"]]
    seen: set[str] = set()
    while todo:
        requirement = todo.pop()
        if _name(requirement) in seen:
            continue
        seen.add(_name(requirement))
        for text in metadata.requires(requirement.name) or []:
            needed = Requirement(text)
            wanted = ["", *sorted(requirement.extras)]
            marker = needed.marker
            if marker is None or any(
                marker.evaluate(dict(default_environment()) | {"extra": extra}) for extra in wanted
            ):
                todo.append(needed)
    return seen


def test_every_imported_module_is_a_runtime_dependency() -> None:
    closure = runtime_closure()
    owners = metadata.packages_distributions()
    missing = {
        module: owners.get(module, ["?"])
        for module in imported_top_level_modules()
        if not {d.lower().replace("_", "-") for d in owners.get(module, [])} & closure
    }
    assert missing == {}, f"imported by tessera/ but not installed by `make run`: {missing}"
