"""Benchmarks in the style of pyiqa's ``benchmark_results.py``, with the protocols of DESIGN §5."""
from crossiqa_pyiqa.benchmark.metrics import MetricSpec, build_metric, resolve_metrics
from crossiqa_pyiqa.benchmark.runner import MODES, BenchmarkConfig, run

__all__ = ['MetricSpec', 'build_metric', 'resolve_metrics', 'MODES', 'BenchmarkConfig', 'run']
