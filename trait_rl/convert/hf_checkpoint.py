"""Convert a local Hugging Face checkpoint directory into a directory the pipeline starts from.

Input (nothing is downloaded): `config.json`, `model.safetensors` or a sharded
`model.safetensors.index.json`, and `tokenizer.json`, as written by `save_pretrained`.

Output directory, read by `load_converted` (and by `--config.model.init_from=DIR`):
  model_config.json   the ModelConfig fields, plus the source model type and directory
  params/             Orbax checkpoint of the parameter pytree of `init_params`
  tokenizer.json      the Hugging Face tokenizer, copied unchanged
  special_ids.json    bos and eos ids of the tokenizer
"""

import dataclasses
import json
import os
import pathlib
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from trait_rl.convert import hf_families, safetensors_io
from trait_rl.data import hf_tokenizer, io_utils
from trait_rl.model import transformer
from trait_rl.model.config import ModelConfig

MODEL_CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"


def read_hf_config(source_dir: str | os.PathLike) -> dict:
    """Return the parsed `config.json` of a Hugging Face model directory."""
    path = pathlib.Path(source_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; point the converter at a save_pretrained dir")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}: invalid JSON ({error.msg})") from None


def convert_params(
    source_dir: str | os.PathLike, param_dtype: str = "float32", dtype: str = "float32"
) -> tuple[ModelConfig, dict]:
    """Read a Hugging Face checkpoint into (ModelConfig, numpy params in `init_params` layout).

    `param_dtype` is the storage dtype of the converted weights, `dtype` the activation dtype
    recorded in the ModelConfig.
    """
    hf_config = read_hf_config(source_dir)
    model_cfg = hf_families.model_config_from_hf(hf_config, param_dtype, dtype)
    tensors = safetensors_io.read_checkpoint_tensors(pathlib.Path(source_dir))
    params = hf_families.params_from_hf(hf_config, tensors, model_cfg)
    check_layout(params, model_cfg)
    return model_cfg, params


def check_layout(params: Any, model_cfg: ModelConfig) -> None:
    """Raise ValueError unless `params` has exactly the tree, shapes and dtypes of init_params."""
    expected = jax.eval_shape(
        lambda rng: transformer.init_params(rng, model_cfg), jax.random.key(0)
    )
    expected_paths = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
    actual_paths = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    if set(expected_paths) != set(actual_paths):
        missing = sorted(map(jax.tree_util.keystr, set(expected_paths) - set(actual_paths)))
        extra = sorted(map(jax.tree_util.keystr, set(actual_paths) - set(expected_paths)))
        raise ValueError(
            f"converted params do not match init_params: missing {missing}, extra {extra}"
        )
    for path, spec in expected_paths.items():
        array = actual_paths[path]
        if array.shape != spec.shape or array.dtype != spec.dtype:
            raise ValueError(
                f"converted {jax.tree_util.keystr(path)} is {array.dtype}{list(array.shape)}, "
                f"init_params gives {spec.dtype}{list(spec.shape)}"
            )


def check_source_dir(source_dir: pathlib.Path) -> dict:
    """Check the source directory, config.json, the model type and tokenizer.json, in that order.

    Returns the parsed config.json. Runs before any tensor is read, so a wrong path fails fast.
    """
    if not source_dir.exists():
        raise FileNotFoundError(
            f"--source={source_dir} not found; give a save_pretrained directory"
        )
    if not source_dir.is_dir():
        raise NotADirectoryError(
            f"--source={source_dir} is a file; give the directory that save_pretrained wrote"
        )
    hf_config = read_hf_config(source_dir)
    hf_families.check_supported(hf_config)
    tokenizer_path = source_dir / hf_tokenizer.TOKENIZER_FILE
    if not tokenizer_path.is_file():
        raise FileNotFoundError(
            f"{tokenizer_path} not found; save a fast tokenizer into the model directory with "
            "AutoTokenizer.from_pretrained(...).save_pretrained(DIR)"
        )
    return hf_config


def _check_output_dir(output_dir: pathlib.Path) -> None:
    if (output_dir / PARAMS_DIR).exists():
        raise FileExistsError(f"{output_dir / PARAMS_DIR} exists; choose an empty output directory")
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"--output={output_dir} is a file; choose a new directory path")
    if output_dir.is_dir() and any(output_dir.iterdir()):
        raise FileExistsError(f"{output_dir} is not empty; choose an empty output directory")


def convert_checkpoint(
    source_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    param_dtype: str = "float32",
    dtype: str = "float32",
) -> ModelConfig:
    """Convert `source_dir` and write the parameters, ModelConfig and tokenizer to `output_dir`.

    The files are written into a temporary directory next to `output_dir` and renamed to it when
    complete, so an interrupted conversion leaves nothing that blocks a rerun. An existing empty
    `output_dir` is replaced.
    """
    source_dir = pathlib.Path(source_dir)
    output_dir = pathlib.Path(output_dir).resolve()
    hf_config = check_source_dir(source_dir)
    _check_output_dir(output_dir)
    bos_id, eos_id = hf_tokenizer.resolve_special_ids(source_dir)
    model_cfg, params = convert_params(source_dir, param_dtype, dtype)

    if output_dir.is_dir():
        output_dir.rmdir()  # Empty, checked above; atomic_directory renames onto a new path.
    with io_utils.atomic_directory(output_dir) as stage:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(stage / PARAMS_DIR, params)
        checkpointer.wait_until_finished()
        shutil.copyfile(
            source_dir / hf_tokenizer.TOKENIZER_FILE, stage / hf_tokenizer.TOKENIZER_FILE
        )
        hf_tokenizer.write_special_ids(stage, bos_id, eos_id)
        record = {
            "model_config": dataclasses.asdict(model_cfg),
            "source_model_type": hf_config["model_type"],
            "source_dir": str(source_dir.resolve()),
        }
        (stage / MODEL_CONFIG_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return model_cfg


def load_model_config(directory: str | os.PathLike) -> ModelConfig:
    """Return the ModelConfig stored in a converted checkpoint directory."""
    path = pathlib.Path(directory) / MODEL_CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; create the directory with scripts/convert_hf_checkpoint.py"
        )
    return ModelConfig(**json.loads(path.read_text())["model_config"])


def restore_params(directory: str | os.PathLike, model_cfg: ModelConfig, shardings: Any = None):
    """Restore converted parameters, placed by `shardings` (a tree of NamedSharding) when given.

    Without shardings the arrays go to the default device.
    """
    abstract = jax.eval_shape(
        lambda rng: transformer.init_params(rng, model_cfg), jax.random.key(0)
    )
    if shardings is not None:
        abstract = jax.tree.map(
            lambda spec, sharding: jax.ShapeDtypeStruct(spec.shape, spec.dtype, sharding=sharding),
            abstract,
            shardings,
        )
    path = pathlib.Path(directory).resolve() / PARAMS_DIR
    params = ocp.StandardCheckpointer().restore(path, abstract)
    if shardings is None:
        params = jax.tree.map(lambda array: jax.device_put(np.asarray(array)), params)
    return params


def load_converted(
    directory: str | os.PathLike, shardings: Any = None
) -> tuple[ModelConfig, dict, hf_tokenizer.HFTokenizer]:
    """Return (ModelConfig, params, tokenizer) of a directory written by `convert_checkpoint`."""
    model_cfg = load_model_config(directory)
    params = restore_params(directory, model_cfg, shardings)
    return model_cfg, params, hf_tokenizer.HFTokenizer.load(directory)
