"""The package's import graph has no circle and imports flow one way (tools/import_graph.py)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location('import_graph', ROOT / 'tools' / 'import_graph.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_package_has_no_import_circle_and_respects_the_layers():
    tool = _tool()
    graph = tool.build_graph()
    assert 'crossiqa_pyiqa.archs.crossiqa_arch' in graph and 'scripts.benchmark' in graph
    assert tool.check(graph) == []
    out = subprocess.run([sys.executable, str(ROOT / 'tools' / 'import_graph.py')], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and 'no circle, layers respected' in out.stdout


def test_the_check_sees_circles_lazy_imports_and_upward_imports():
    tool = _tool()
    assert tool.cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c']]
    graph = {'crossiqa_pyiqa.archs.x': {'crossiqa_pyiqa.benchmark.y'}, 'crossiqa_pyiqa.benchmark.y': set()}
    assert any('a higher layer' in p for p in tool.check(graph))
    # a lazy import inside a function is an edge too
    edges = tool.build_graph()['crossiqa_pyiqa.regression.fit']
    assert 'crossiqa_pyiqa.archs.crossiqa_arch' in edges
