#!/usr/bin/env python
"""The package's import graph: intra-package imports, circles and the layer order.

    python tools/import_graph.py              # check crossiqa_pyiqa/, scripts/ and tools/; exit 1 on a problem
    python tools/import_graph.py --edges      # also print every edge (module -> module)
    python tools/import_graph.py --dot g.dot  # Graphviz file of the package's modules

Reads the source with the standard library's ``ast`` only (nothing is imported or run), so
it sees every ``import`` statement, also those inside functions (lazy imports count: they
are dependencies all the same). An import of a package (``from crossiqa_pyiqa import
degradations``) is an edge to that package's ``__init__``; ``from pkg import name`` is an
edge to the submodule ``pkg.name`` when such a file exists.

Two rules, each a failure:

1. **No circles**: no module reaches itself through imports (strongly connected
   components of the module graph, lazy imports included).
2. **Layers**: imports flow one way, ``scripts``/``tools`` → entry → ``benchmark`` →
   ``regression`` → ``train`` → ``archs`` → blocks (:data:`LAYERS`). A module may import
   from its own layer or a lower one, never from a higher one.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = 'crossiqa_pyiqa'

#: Layers, highest first. A module's layer is the first entry that matches it: the module
#: itself or a package it is in. ``scripts`` and ``tools`` are the repo's command folders.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ('commands', ('scripts', 'tools')),
    # the package's front: `import crossiqa_pyiqa`, the CLI, the options checker (every kind of options file)
    # and `crossiqa_pyiqa.explain` (explanation.py: builds a metric, reads its diagnosis heads and quality map)
    ('entry', (PACKAGE, f'{PACKAGE}.cli', f'{PACKAGE}.options', f'{PACKAGE}.explanation',
               f'{PACKAGE}.explain_figure')),
    ('benchmark', (f'{PACKAGE}.benchmark',)),
    ('regression', (f'{PACKAGE}.regression',)),
    ('train', (f'{PACKAGE}.train',)),
    # the networks and their registration in pyiqa
    ('archs', (f'{PACKAGE}.archs', f'{PACKAGE}.registration')),
    # building blocks that know nothing of the layers above
    ('blocks', (f'{PACKAGE}.degradations', f'{PACKAGE}.grepq', f'{PACKAGE}.inputs', f'{PACKAGE}.weights',
                f'{PACKAGE}.download', f'{PACKAGE}.optionfile', f'{PACKAGE}.paths', f'{PACKAGE}.image_files')),
]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix('')
    parts = list(rel.parts)
    if parts[-1] == '__init__':
        parts = parts[:-1]
    return '.'.join(parts)


def source_files() -> dict[str, Path]:
    files = {}
    for folder in (PACKAGE, 'scripts', 'tools'):
        for path in sorted((ROOT / folder).rglob('*.py')):
            if '__pycache__' not in path.parts:
                files[module_name(path)] = path
    return files


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The known module ``name`` refers to (itself, or the closest known package above it)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition('.')[0]
    return None


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == '__init__.py'
    here = name if is_package else name.rpartition('.')[0]
    # scripts and tools are run as files: `import foo` next to them means the sibling file
    folder = name.split('.')[0] if name.split('.')[0] in ('scripts', 'tools') else None
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            for alias in node.names:
                targets.append(alias.name)
                if folder:
                    targets.append(f'{folder}.{alias.name}')
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split('.')[:len(here.split('.')) - node.level + 1]
                module = '.'.join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ''
                if folder and module and f'{folder}.{module}' in modules:
                    module = f'{folder}.{module}'
            for alias in node.names:
                sub = f'{module}.{alias.name}'
                targets.append(sub if sub in modules else module)
        for target in targets:
            if target.split('.')[0] not in (PACKAGE, 'scripts', 'tools'):
                continue
            resolved = _resolve(target, modules)
            if resolved and resolved != name:
                found.add(resolved)
    return found


def build_graph() -> dict[str, set[str]]:
    modules = source_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
    return out


def layer_of(name: str) -> int:
    best, best_len = None, -1
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + '.')) and len(prefix) > best_len:
                best, best_len = rank, len(prefix)
    if best is None:
        raise KeyError(f'module {name} is in no layer of tools/import_graph.py LAYERS: add it there')
    return best


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for name in sorted(graph):
        for target in sorted(graph[name]):
            if layer_of(target) < layer_of(name):
                problems.append(f'{name} ({LAYERS[layer_of(name)][0]}) imports {target} '
                                f'({LAYERS[layer_of(target)][0]}), a higher layer')
    return problems


def check(graph: dict[str, set[str]] | None = None) -> list[str]:
    """Every problem found (empty: no circle, layers respected)."""
    graph = build_graph() if graph is None else graph
    problems = [f'circle: {" <-> ".join(c)}' for c in cycles(graph)]
    try:
        problems += layer_violations(graph)
    except KeyError as error:
        problems.append(str(error.args[0]))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--edges', action='store_true', help='print every import edge')
    parser.add_argument('--dot', help='write a Graphviz file of the package modules')
    args = parser.parse_args(argv)
    graph = build_graph()
    if args.edges:
        for name in sorted(graph):
            for target in sorted(graph[name]):
                print(f'{name} -> {target}')
    if args.dot:
        with open(args.dot, 'w') as f:
            f.write('digraph imports {\n  rankdir=TB;\n')
            for name in sorted(graph):
                if name.startswith(PACKAGE):
                    for target in sorted(graph[name]):
                        f.write(f'  "{name}" -> "{target}";\n')
            f.write('}\n')
    problems = check(graph)
    n_edges = sum(len(v) for v in graph.values())
    for problem in problems:
        print(problem)
    print(f'{len(graph)} modules, {n_edges} internal imports: '
          + ('no circle, layers respected' if not problems else f'{len(problems)} problem(s)'))
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
