"""Loading of Python files by path: config files (`get_config`) and sweep files (`get_sweep`).

configs/ is a folder of scripts, not a package, so its files are imported from their paths.
"""

import importlib.util
import os
import pathlib
import types

import ml_collections


def load_module(path: str | os.PathLike, module_name: str) -> types.ModuleType:
    """Import the Python file at `path` under `module_name` and return the module."""
    path = pathlib.Path(path)
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(path: str | os.PathLike, variant: str | None = None) -> ml_collections.ConfigDict:
    """Return `get_config(variant)` of the config file at `path`."""
    path = pathlib.Path(path)
    return load_module(path, f"trait_rl_config_{path.stem}").get_config(variant)
