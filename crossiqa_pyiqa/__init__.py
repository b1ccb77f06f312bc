"""crossiqa-pyiqa: Cross-IQA and GRepQ as pyiqa plugins.

``import crossiqa_pyiqa`` registers the architectures in pyiqa's ``ARCH_REGISTRY``
and the metrics in pyiqa's ``DEFAULT_CONFIGS``, so ``pyiqa.create_metric('crossiqa')``
works like any built-in metric. pyiqa's own harness (``build_network``) finds the
architectures without this import through the ``pyiqa.archs`` entry point, which
calls :func:`register`.
"""
from crossiqa_pyiqa.registration import register, register_metric

__version__ = '0.1.0'
__all__ = ['register', 'register_metric', 'explain', 'Explanation', '__version__']

register()


def __getattr__(name: str):
    """``crossiqa_pyiqa.explain`` / ``Explanation`` (``explanation.py``), imported on first use."""
    if name in ('explain', 'Explanation'):
        from crossiqa_pyiqa import explanation

        return getattr(explanation, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
