"""pyiqa-style YAML options for the plugin's trainers, with command-line overrides."""
from __future__ import annotations

import copy
import os
from typing import Any, Iterable

import yaml
from pyiqa.utils.options import dict2str, ordered_yaml

__all__ = ['load_options', 'apply_overrides', 'dict2str', 'to_plain']


def to_plain(obj: Any) -> Any:
    """OrderedDicts → dicts, tuples → lists (for JSON, checkpoints and YAML dumps)."""
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def load_options(path: str) -> dict[str, Any]:
    """Read an options file with pyiqa's YAML loader (keeps key order)."""
    loader, _ = ordered_yaml()
    if not os.path.isfile(path):
        raise FileNotFoundError(f'Options file {path} does not exist.')
    with open(path) as f:
        opt = yaml.load(f, Loader=loader)
    if not isinstance(opt, dict):
        raise ValueError(f'Options file {path} does not hold a mapping at top level.')
    return to_plain(opt)


def apply_overrides(opt: dict[str, Any], assignments: Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` assignments (value parsed as YAML), like pyiqa's ``--force_yml``."""
    opt = copy.deepcopy(opt)
    for item in assignments:
        if '=' not in item:
            raise ValueError(f'Override {item!r} is not of the form key.path=value')
        key, value = item.split('=', 1)
        node = opt
        parts = key.split('.')
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f'Override {item!r}: {part!r} is not a mapping in the options')
        node[parts[-1]] = yaml.safe_load(value)
    return opt
