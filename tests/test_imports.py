"""The package's import graph: no cycle between modules, and the models independent of inference/deploy.

Every module of ``d2im_tf`` is parsed (not imported) and every ``import`` statement counted, at module
level or inside a function alike: an import deferred into a function still makes the two modules
depend on each other.
"""

import ast
from pathlib import Path

from conftest import ROOT


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module → the modules of ``package`` (under ``root``) it imports anywhere in its code."""
    files = {module_name(path, root): path for path in (root / package).rglob("*.py")}
    graph = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the containing package, one level up per extra dot
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # "from a import b": b is a module of a, or a name defined in a
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base for alias in node.names]
            else:
                continue
            imported.update(target for target in targets if target in files and target != name)
        graph[name] = imported
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_in_the_package():
    graph = import_graph(ROOT, "d2im_tf")
    assert len(graph) > 60 and graph["d2im_tf.deploy.runtimes"] >= {"d2im_tf.deploy.convert", "d2im_tf.deploy.tfjs"}
    assert cycles(graph) == []


def test_models_import_nothing_from_inference_or_deploy():
    graph = import_graph(ROOT, "d2im_tf")
    models = {name: imported for name, imported in graph.items() if name.startswith("d2im_tf.models")}
    assert "d2im_tf.models.d2im" in models
    offending = {
        name: sorted(target for target in imported if target.startswith(("d2im_tf.inference", "d2im_tf.deploy")))
        for name, imported in models.items()
    }
    assert {name: targets for name, targets in offending.items() if targets} == {}


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    """The checker itself, on a package whose only cycle goes through an import inside a function and
    a relative import."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from .c import value\n    return value\n")
    (package / "sub" / "c.py").write_text("import json\n\ndef g():\n    import pkg.a\n\nvalue = 1\n")
    (package / "d.py").write_text("from pkg.sub.c import value\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.sub.b"] == {"pkg.sub.c"} and graph["pkg.sub.c"] == {"pkg.a"} and graph["pkg.d"] == {"pkg.sub.c"}
    assert cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.sub.c"]]
