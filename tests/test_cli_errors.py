"""One-line `error: ...` exits for user-facing errors, tracebacks for programming errors."""

import os
import pathlib
import subprocess
import sys

import pytest

from trait_rl import cli, configuration
from trait_rl.convert import hf_families
from trait_rl.eval import user_eval
from trait_rl.training import preemption

REPO = pathlib.Path(__file__).resolve().parents[1]


def _raise(error):
    def main(argv):
        del argv
        raise error

    return cli.catch_user_errors(main)


def test_project_error_exits_with_message():
    with pytest.raises(SystemExit) as exit_info:
        _raise(configuration.ConfigError("invalid config value a=1"))([])
    assert exit_info.value.code == "error: invalid config value a=1"


def test_project_value_error_exits_with_message():
    def main(argv):
        user_eval.filled_attack_prompts([], None, max_per_template=-1)

    with pytest.raises(SystemExit) as exit_info:
        cli.catch_user_errors(main)([])
    assert exit_info.value.code.startswith("error: invalid eval.max_prompts_per_split=-1")


def test_converter_not_implemented_exits_with_message():
    def main(argv):
        hf_families.check_supported({"model_type": "bert"})

    with pytest.raises(SystemExit) as exit_info:
        cli.catch_user_errors(main)([])
    assert exit_info.value.code.startswith("error: model_type 'bert' in config.json")


def test_test_file_value_error_keeps_traceback():
    def main(argv):
        raise ValueError("raised outside trait_rl")

    with pytest.raises(ValueError, match="outside"):
        cli.catch_user_errors(main)([])


def test_library_value_error_keeps_traceback():
    def main(argv):
        int("not a number")

    with pytest.raises(ValueError, match="invalid literal"):
        cli.catch_user_errors(main)([])


def test_unpacking_error_keeps_traceback():
    def main(argv):
        first, second = argv

    with pytest.raises(ValueError, match="not enough values"):
        cli.catch_user_errors(main)([])


def test_programming_error_keeps_traceback():
    with pytest.raises(KeyError):
        _raise(KeyError("x"))([])


def test_os_file_error_names_path(tmp_path):
    def main(argv):
        (tmp_path / "missing.txt").read_text()

    with pytest.raises(SystemExit) as exit_info:
        cli.catch_user_errors(main)([])
    assert exit_info.value.code == f"error: No such file or directory: {tmp_path / 'missing.txt'}"


def test_preempted_passes_through():
    with pytest.raises(preemption.Preempted) as exit_info:
        _raise(preemption.Preempted(3, "/tmp/x"))([])
    assert exit_info.value.code == preemption.PREEMPTED_EXIT_CODE


def test_check_workdir_rejects_file(tmp_path):
    path = tmp_path / "run"
    path.write_text("")
    with pytest.raises(NotADirectoryError, match=f"--workdir={path} is an existing file"):
        cli.check_workdir(str(path))
    assert cli.check_workdir(str(tmp_path / "new")) == tmp_path / "new"


def test_unknown_override_names_field():
    error = AttributeError(KeyError('\'stepz\'\nDid you mean "steps" instead of "stepz"?'))
    argv = ["train.py", "--config=c.py", "--config.rl.stepz=3"]
    message = cli._unknown_override(argv, error)
    assert message.startswith("--config.rl.stepz=3: unknown config field 'rl.stepz'")
    assert 'Did you mean "steps"' in message
    assert cli._unknown_override(["train.py", "--config.seed=1"], error) is None


def _run_script(name, *args, cwd=REPO):
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / name), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=180,
        check=False,
    )


def test_pipeline_unknown_override_one_line(tmp_path):
    result = _run_script(
        "run_pipeline.py",
        "--config=configs/default.py:tiny",
        f"--workdir={tmp_path / 'run'}",
        "--config.nope=1",
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    assert "error: --config.nope=1: unknown config field 'nope'" in result.stderr


def test_pipeline_workdir_file_one_line(tmp_path):
    workdir = tmp_path / "run"
    workdir.write_text("")
    result = _run_script(
        "run_pipeline.py", "--config=configs/default.py:tiny", f"--workdir={workdir}"
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    assert f"error: --workdir={workdir} is an existing file" in result.stderr


def test_convert_missing_source_one_line(tmp_path):
    result = _run_script(
        "convert_hf_checkpoint.py", f"--source={tmp_path / 'nope'}", f"--output={tmp_path / 'o'}"
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    assert f"error: --source={tmp_path / 'nope'} not found" in result.stderr


def test_evaluate_output_file_rejected_first(tmp_path):
    output = tmp_path / "out"
    output.write_text("")
    result = _run_script(
        "evaluate.py",
        f"--checkpoint={tmp_path / 'missing'}",
        f"--prompts={tmp_path}",
        f"--output={output}",
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    assert f"error: --output={output} is an existing file" in result.stderr


def test_evaluate_prompts_directory_rejected(tmp_path):
    result = _run_script(
        "evaluate.py", f"--checkpoint={tmp_path / 'missing'}", f"--prompts={tmp_path}"
    )
    assert result.returncode == 1
    assert f"error: {tmp_path} is a directory" in result.stderr, result.stderr


def test_evaluate_help_names_set_files():
    result = _run_script("evaluate.py", "--help")
    assert "responses_<arm>_<set>.jsonl" in result.stdout
    assert "WORKDIR/rl_trait_rl" in result.stdout or "WORKDIR/rl_trait_rl" in result.stderr
