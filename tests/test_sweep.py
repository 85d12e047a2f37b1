"""Sweeps: loading and validating overrides, scheduler commands, running and aggregating."""

import json
import pathlib
import shlex
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from configs import default
from trait_rl import sweep

REPO = pathlib.Path(__file__).resolve().parents[1]
SWEEP_DIR = REPO / "configs" / "sweeps"


def _write_sweep(path: pathlib.Path, body: str) -> pathlib.Path:
    path.write_text("def get_sweep():\n    return " + body + "\n")
    return path


def _split(safe_rate: float, ece: float) -> dict:
    return {"safe_rate": safe_rate, "humility": {"ece": ece, "brier": 0.2}}


def _metrics(seed: int, trait_attack: float, conventional_attack: float) -> dict:
    """The parts of a pipeline metrics.json that the sweep aggregation reads."""
    return {
        "seed": seed,
        "arms": {
            "trait_rl": {
                "splits": {
                    "train": _split(0.9, 0.1),
                    "heldout_attack": _split(trait_attack, 0.1 + 0.01 * seed),
                }
            },
            "conventional": {
                "splits": {
                    "train": _split(0.8, 0.2),
                    "heldout_attack": _split(conventional_attack, 0.3),
                }
            },
        },
    }


def _write_metrics(run_dir: pathlib.Path, metrics: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def test_grid_names_groups_and_seeds():
    runs = sweep.grid({"ppo": {"rl.algorithm": "ppo"}}, seeds=(0, 1))
    assert runs == [
        {"name": "ppo_seed0", "group": "ppo", "rl.algorithm": "ppo", "seed": 0, "data.seed": 0},
        {"name": "ppo_seed1", "group": "ppo", "rl.algorithm": "ppo", "seed": 1, "data.seed": 1},
    ]


def test_apply_overrides_copies_config():
    config = default.get_config("tiny")
    changed = sweep.apply_overrides(
        config, {"seed": 3, "rl.trait_weights.humility": 0.0, "arms": ("oracle_reward",)}
    )
    assert changed.seed == 3
    assert changed.rl.trait_weights.humility == 0.0
    assert changed.arms == ("oracle_reward",)
    assert config.seed == 0
    assert config.rl.trait_weights.humility == 1.0


def test_set_field_rejects_section():
    config = default.get_config("tiny")
    with pytest.raises(TypeError, match="'rl.trait_weights' is a section"):
        sweep.set_field(config, "rl.trait_weights", {"honesty": 1.0})


def test_unknown_field_names_file_line(tmp_path):
    path = _write_sweep(
        tmp_path / "typo.py",
        "[\n"
        '        {"name": "ok", "seed": 1},\n'
        '        {"name": "bad", "rl.trait_weight.honesty": 0.0},\n'
        "    ]",
    )
    runs = sweep.load_sweep(path)
    expected = (
        f"{path}:4: run 'bad': unknown config field 'rl.trait_weight.honesty': rl has no field "
        "'trait_weight'"
    )
    with pytest.raises(sweep.SweepError, match=expected.replace(".", r"\.")):
        sweep.run_configs(default.get_config("tiny"), runs, path)


def test_invalid_value_names_run(tmp_path):
    path = _write_sweep(tmp_path / "mix.py", '[{"name": "high", "rl.trait_mix": 1.5}]')
    runs = sweep.load_sweep(path)
    with pytest.raises(sweep.SweepError, match=r"run 'high': invalid config value rl\.trait_mix"):
        sweep.run_configs(default.get_config("tiny"), runs, path)


def test_wrong_type_names_field(tmp_path):
    path = _write_sweep(tmp_path / "steps.py", '[{"name": "r", "rl.steps": "ten"}]')
    runs = sweep.load_sweep(path)
    expected = (
        f"{path}:2: run 'r': invalid value 'ten' for config field 'rl.steps': expected type int"
    )
    with pytest.raises(sweep.SweepError, match=expected.replace(".", r"\.")):
        sweep.run_configs(default.get_config("tiny"), runs, path)


def test_load_sweep_rejects_bad_files(tmp_path):
    with pytest.raises(sweep.SweepError, match="sweep file not found"):
        sweep.load_sweep(tmp_path / "missing.py")
    no_function = tmp_path / "empty.py"
    no_function.write_text("RUNS = []\n")
    with pytest.raises(sweep.SweepError, match=r"get_sweep\(\) not found"):
        sweep.load_sweep(no_function)
    twice = _write_sweep(tmp_path / "twice.py", '[{"name": "a"}, {"name": "a", "seed": 1}]')
    with pytest.raises(sweep.SweepError, match=r"duplicate run names \['a'\]"):
        sweep.load_sweep(twice)
    nameless = _write_sweep(tmp_path / "nameless.py", '[{"seed": 1}]')
    with pytest.raises(sweep.SweepError, match="run 0: invalid name None"):
        sweep.load_sweep(nameless)


@pytest.mark.parametrize(
    ("filename", "num_runs", "group"),
    [
        ("seeds_x_arms.py", 15, "single_trait_honesty"),
        ("trait_weights.py", 21, "only_humility"),
        ("trait_mix.py", 27, "data0.25_rl0.75"),
    ],
)
def test_shipped_sweeps_validate(filename, num_runs, group):
    path = SWEEP_DIR / filename
    runs = sweep.load_sweep(path)
    configs = sweep.run_configs(default.get_config(), runs, path, device_count=8)
    assert len(configs) == num_runs
    assert len({run.name for run in runs}) == num_runs
    members = [config for run, config in zip(runs, configs, strict=True) if run.group == group]
    assert [config.seed for config in members] == [0, 1, 2]
    assert [config.data.seed for config in members] == [0, 1, 2]
    assert all(config.eval.ablation is False for config in configs)


def test_trait_weights_sweep_has_single_traits():
    runs = {run.name: run for run in sweep.load_sweep(SWEEP_DIR / "trait_weights.py")}
    only = runs["only_corrigibility_seed1"].overrides
    assert only["rl.trait_weights.honesty"] == 0.0
    assert only["rl.trait_weights.humility"] == 0.0
    assert only["rl.trait_weights.corrigibility"] == 1.0


def test_run_command_exact():
    run = sweep.SweepRun(
        name="oracle_seed1",
        group="oracle",
        overrides={
            "arms": ("single_trait:honesty", "conventional"),
            "eval.ablation": False,
            "rl.trait_mix": 0.25,
            "seed": 1,
        },
    )
    command = sweep.run_command("configs/default.py:tiny", run, "runs/s", {"rl.steps": 3})
    assert command == (
        "python scripts/run_pipeline.py --config=configs/default.py:tiny "
        "--workdir=runs/s/oracle_seed1 --config.rl.steps=3 "
        '\'--config.arms=("single_trait:honesty", "conventional")\' '
        "--config.eval.ablation=false --config.rl.trait_mix=0.25 --config.seed=1"
    )


def test_run_command_single_element_tuple():
    run = sweep.SweepRun("a", "a", {"arms": ("trait_rl",)})
    command = sweep.run_command("c.py", run, "w")
    assert command.endswith("'--config.arms=(\"trait_rl\",)'")


def test_run_command_overrides_base():
    run = sweep.SweepRun("a", "a", {"rl.steps": 7})
    command = sweep.run_command("c.py", run, "w", {"rl.steps": 3, "seed": 2}, python="python3")
    assert command == (
        "python3 scripts/run_pipeline.py --config=c.py --workdir=w/a --config.rl.steps=7 "
        "--config.seed=2"
    )


def test_run_command_parses_back():
    """The printed flags, parsed by config_flags, give exactly the validated run config."""
    path = SWEEP_DIR / "seeds_x_arms.py"
    runs = sweep.load_sweep(path)
    base = default.get_config()
    configs = sweep.run_configs(base, runs, path)
    for run, expected in [(runs[-1], configs[-1]), (runs[4], configs[4])]:
        words = shlex.split(sweep.run_command("configs/default.py", run, "w"))
        flag_values = flags.FlagValues()
        config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=words[1:])
        flags.DEFINE_string("workdir", None, "", flag_values=flag_values)
        flag_values(words[1:])
        assert flag_values.workdir == f"w/{run.name}"
        assert flag_values.config.to_dict() == expected.to_dict()


def test_run_sweep_resumes(tmp_path):
    runs = [sweep.SweepRun(f"r{i}", "g", {"seed": i}) for i in range(3)]
    configs = sweep.run_configs(default.get_config("tiny"), runs, "inline")
    _write_metrics(tmp_path / "r1", _metrics(1, 0.5, 0.3))
    calls = []

    def fake_run(config, run_dir, config_arg):
        calls.append((config.seed, run_dir, config_arg))
        _write_metrics(run_dir, _metrics(config.seed, 0.5, 0.3))

    paths = sweep.run_sweep(runs, configs, tmp_path, "configs/default.py:tiny", fake_run)
    assert calls == [
        (0, tmp_path / "r0", "configs/default.py:tiny"),
        (2, tmp_path / "r2", "configs/default.py:tiny"),
    ]
    assert paths == [tmp_path / f"r{i}" / "metrics.json" for i in range(3)]


def _three_seed_sweep(tmp_path) -> list[sweep.SweepRun]:
    runs = []
    for seed, trait_attack in enumerate([0.5, 0.6, 0.7]):
        run = sweep.SweepRun(f"base_seed{seed}", "base", {"seed": seed})
        _write_metrics(tmp_path / run.name, _metrics(seed, trait_attack, 0.3))
        runs.append(run)
    runs.append(sweep.SweepRun("ppo_seed0", "ppo", {"rl.algorithm": "ppo"}))
    _write_metrics(tmp_path / "ppo_seed0", _metrics(0, 0.9, 0.3))
    runs.append(sweep.SweepRun("ppo_seed1", "ppo", {"rl.algorithm": "ppo"}))
    return runs


def test_aggregate_groups_across_seeds(tmp_path):
    groups = sweep.aggregate_sweep(_three_seed_sweep(tmp_path), tmp_path, num_resamples=200)
    assert list(groups) == ["base", "ppo"]
    assert groups["base"]["runs"] == ["base_seed0", "base_seed1", "base_seed2"]
    assert groups["base"]["missing"] == []
    assert groups["ppo"]["missing"] == ["ppo_seed1"]
    rows = {row["name"]: row for row in groups["base"]["rows"]}
    attack = rows["trait_rl/heldout_attack/safe_rate"]
    assert attack["values"] == (0.5, 0.6, 0.7)
    assert attack["mean"] == pytest.approx(0.6)
    assert 0.5 <= attack["low"] <= 0.6 <= attack["high"] <= 0.7
    assert rows["trait_rl/heldout_attack/ece"]["mean"] == pytest.approx(0.11)
    improvement = rows["claims/heldout_attacks/relative_improvement_of_mean_rates"]
    assert improvement["mean"] == pytest.approx(0.6 / 0.3 - 1)
    ppo_rows = {row["name"]: row for row in groups["ppo"]["rows"]}
    assert ppo_rows["trait_rl/heldout_attack/safe_rate"]["values"] == (0.9,)


def test_sweep_report_files(tmp_path):
    groups = sweep.aggregate_sweep(_three_seed_sweep(tmp_path), tmp_path, num_resamples=200)
    path = sweep.write_sweep_report(tmp_path, "configs/sweeps/x.py", groups)
    text = path.read_text()
    assert path == tmp_path / "sweep.md"
    assert "## base" in text
    assert "Runs: base_seed0, base_seed1, base_seed2." in text
    assert "Missing (no metrics.json): ppo_seed1." in text
    assert "| trait_rl/heldout_attack/safe_rate | 3 | 0.600 |" in text
    assert "| trait_rl/heldout_attack/safe_rate | 1 | 0.900 | [0.900, 0.900] |" in text
    assert "![sweep_heldout_attack_safe_rate](plots/sweep_heldout_attack_safe_rate.png)" in text
    png = tmp_path / "plots" / "sweep_heldout_attack_safe_rate.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["sweep"] == "configs/sweeps/x.py"
    saved_rows = {row["name"]: row for row in saved["groups"]["base"]["rows"]}
    assert saved_rows["trait_rl/train/safe_rate"]["values"] == [0.9, 0.9, 0.9]


def test_safe_rates_by_split(tmp_path):
    groups = sweep.aggregate_sweep(_three_seed_sweep(tmp_path), tmp_path, num_resamples=200)
    rates = sweep.safe_rates_by_split(groups)
    assert sorted(rates) == ["heldout_attack", "train"]
    assert sorted(rates["heldout_attack"]) == ["conventional", "trait_rl"]
    assert rates["heldout_attack"]["trait_rl"]["ppo"]["estimate"] == pytest.approx(0.9)


def test_aggregate_without_runs_fails(tmp_path):
    runs = [sweep.SweepRun("a", "a", {})]
    with pytest.raises(sweep.SweepError, match="no run has a metrics.json yet"):
        sweep.aggregate_sweep(runs, tmp_path, num_resamples=10)


def _script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "scripts/sweep.py", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_script_prints_commands(tmp_path):
    result = _script(
        "--config=configs/default.py:tiny",
        "--config.rl.steps=3",
        f"--sweep={SWEEP_DIR / 'trait_mix.py'}",
        f"--workdir={tmp_path}",
        "--print_commands",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 27
    assert lines[0] == (
        f"python scripts/run_pipeline.py --config=configs/default.py:tiny "
        f"--workdir={tmp_path}/data0.25_rl0.25_seed0 --config.rl.steps=3 "
        "--config.data.trait_mix=0.25 --config.rl.trait_mix=0.25 --config.eval.ablation=false "
        "--config.seed=0 --config.data.seed=0"
    )
    assert not list(tmp_path.iterdir())


def test_script_only_aggregate(tmp_path):
    sweep_file = _write_sweep(
        tmp_path / "two.py", '[{"name": f"s{i}", "group": "g", "seed": i} for i in range(2)]'
    )
    for seed in range(2):
        _write_metrics(tmp_path / "runs" / f"s{seed}", _metrics(seed, 0.4 + 0.2 * seed, 0.2))
    result = _script(
        "--config=configs/default.py:tiny",
        f"--sweep={sweep_file}",
        f"--workdir={tmp_path / 'runs'}",
        "--only_aggregate",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = (tmp_path / "runs" / "sweep.md").read_text()
    assert "| trait_rl/heldout_attack/safe_rate | 2 | 0.500 |" in text
