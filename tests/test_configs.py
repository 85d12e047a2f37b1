"""Every config file and variant validates, has its intended model size, and rejects bad values."""

import pathlib
import re

import jax
import pytest

from trait_rl import config_files, configuration
from trait_rl.configuration import ConfigError
from trait_rl.model import transformer
from trait_rl.model.config import ModelConfig

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
# (config file, variant, intended parameter count or None for the CPU configs).
VARIANTS = [
    ("default.py", None, None),
    ("default.py", "tiny", None),
    ("gpu.py", "125m", 125e6),
    ("gpu.py", "350m", 350e6),
    ("tpu_pod.py", "1b", 1e9),
    ("tpu_pod.py", "3b", 3e9),
]


def load_config(filename: str, variant: str | None):
    return config_files.load_config(CONFIG_DIR / filename, variant)


def count_params(config) -> int:
    """Count parameters from shapes only, so a 3B model allocates nothing."""
    model_cfg = ModelConfig.from_config(config.model, vocab_size=config.data.vocab_size)
    shapes = jax.eval_shape(lambda rng: transformer.init_params(rng, model_cfg), jax.random.key(0))
    return sum(leaf.size for leaf in jax.tree.leaves(shapes))


@pytest.mark.parametrize(("filename", "variant", "_"), VARIANTS)
def test_config_validates(filename, variant, _):
    configuration.validate(load_config(filename, variant))


@pytest.mark.parametrize(("filename", "variant", "intended"), [v for v in VARIANTS if v[2]])
def test_config_param_count(filename, variant, intended):
    config = load_config(filename, variant)
    count = count_params(config)
    assert abs(count - intended) / intended < 0.05, f"{filename}:{variant} has {count:,} params"
    model_cfg = ModelConfig.from_config(config.model, vocab_size=config.data.vocab_size)
    assert model_cfg.num_params == count


@pytest.mark.parametrize("variant", ["125m", "350m"])
def test_gpu_config_numerics(variant):
    config = load_config("gpu.py", variant)
    assert config.model.dtype == "bfloat16"
    assert config.model.param_dtype == "float32"
    assert config.mesh.data == -1
    assert not config.multihost
    configuration.validate(config, device_count=1)


@pytest.mark.parametrize("variant", ["1b", "3b"])
def test_tpu_pod_mesh_fits_slices(variant):
    config = load_config("tpu_pod.py", variant)
    assert config.multihost
    assert (config.mesh.fsdp, config.mesh.tensor) == (16, 4)
    configuration.validate(config, device_count=64)
    configuration.validate(config, device_count=256)
    with pytest.raises(ConfigError, match="mesh"):
        configuration.validate(config, device_count=8)


def test_tpu_pod_shapes_divide_mesh():
    for variant in ("1b", "3b"):
        config = load_config("tpu_pod.py", variant)
        model, mesh = config.model, config.mesh
        assert model.embed_dim % mesh.fsdp == 0, variant
        for field in ("vocab_size", "num_heads", "num_kv_heads", "mlp_dim"):
            assert model[field] % mesh.tensor == 0, f"{variant}: model.{field}"


@pytest.mark.parametrize("filename", ["gpu.py", "tpu_pod.py"])
def test_unknown_variant_raises(filename):
    with pytest.raises(ValueError, match="unknown .* variant 'huge'"):
        load_config(filename, "huge")


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("model.num_heads", 7, "model.num_heads=7"),
        ("model.num_kv_heads", 5, "model.num_kv_heads=5"),
        ("model.num_layers", 0, "model.num_layers=0"),
        ("model.norm", "batchnorm", "model.norm='batchnorm'"),
        ("mesh.fsdp", 0, "mesh.fsdp=0"),
        ("sft.learning_rate", -1.0, "sft.learning_rate=-1.0"),
        ("rl.algorithm", "dpo", "rl.algorithm='dpo'"),
        ("rl.rollout_matmul_dtype", "int8", "rl.rollout_matmul_dtype='int8'"),
    ],
)
@pytest.mark.parametrize("filename", ["gpu.py", "tpu_pod.py"])
def test_invalid_value_names_field(filename, field, value, named):
    config = load_config(filename, None)
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(ConfigError, match=re.escape(named)):
        configuration.validate(config)
