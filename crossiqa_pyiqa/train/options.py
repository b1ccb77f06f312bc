"""pyiqa-style YAML options for the plugin's trainers, with command-line overrides.

The reader and the validator live in :mod:`crossiqa_pyiqa.options` (one for every kind of
options file); this module keeps the trainers' names for them.
"""
from __future__ import annotations

from pyiqa.utils.options import dict2str

from crossiqa_pyiqa.options import (OptionsError, apply_overrides, load_options, parse_value, to_plain,
                                    validate_options)

__all__ = ['load_options', 'apply_overrides', 'dict2str', 'to_plain', 'validate_options', 'parse_value',
           'OptionsError']
