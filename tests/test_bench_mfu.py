"""Tests of benchmarks/bench_mfu.py with --config: the model and batch it takes from a config."""

import json
import os
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_mfu  # noqa: E402
import benchlib  # noqa: E402

from configs import default  # noqa: E402


def test_gpu_350m_config_model():
    cfg, batch, seq_len = bench_mfu.config_model(str(REPO / "configs" / "gpu.py") + ":350m")
    assert abs(cfg.num_params - 350e6) / 350e6 < 0.05
    assert cfg.vocab_size == 32_768
    assert cfg.num_layers == 24
    assert (batch, seq_len) == (64, 256)
    assert cfg.matmul_input_dtype == jnp.bfloat16


def test_config_model_takes_sft_dtype():
    # The default config trains SFT in bfloat16 over a float32 model.
    cfg, _, _ = bench_mfu.config_model(str(REPO / "configs" / "default.py"))
    assert default.get_config().sft.dtype == "bfloat16"
    assert cfg.activation_dtype == jnp.bfloat16
    assert cfg.vocab_size == default.get_config().data.vocab_size


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("configs/missing.py", "config file not found"),
        ("configs/gpu.py:1b", "unknown gpu config variant '1b'"),
    ],
)
def test_config_model_rejects_bad_spec(spec, message):
    with pytest.raises(SystemExit, match=message):
        bench_mfu.config_model(str(REPO / spec))


def test_config_run_writes_its_model_row(tmp_path):
    spec = "configs/default.py:tiny"
    command = [
        sys.executable,
        "benchmarks/bench_mfu.py",
        f"--config={spec}",
        "--warmup=1",
        "--repeats=2",
        "--peak-size=256",
    ]
    env = {**os.environ, "BENCH_RESULTS_DIR": str(tmp_path)}
    subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True, timeout=600)

    results = json.loads((tmp_path / "mfu.json").read_text())
    (row,) = results["rows"]
    cfg, batch, seq_len = bench_mfu.config_model(str(REPO / spec))
    tiny = default.get_config("tiny")
    assert row["model"] == spec
    assert (row["batch"], row["seq_len"]) == (tiny.sft.batch_size, tiny.sft.seq_len)
    assert row["params"] == cfg.num_params
    assert row["step_gflop"] == pytest.approx(benchlib.train_step_flops(cfg, batch, seq_len) / 1e9)
    peak = benchlib.limit_peak(results["matmul_peak"], cfg)
    assert row["mfu"] == pytest.approx(row["achieved_gflops"] / peak)
