"""Per-phase Orbax checkpoints under WORKDIR/<phase>/, with a FINAL marker between phases.

Layout of one phase directory:
  WORKDIR/<phase>/checkpoints/<step>/{params,train}   Orbax CheckpointManager steps
  WORKDIR/<phase>/FINAL                               {"step": N}, written after the last save
  WORKDIR/<phase>/config.json                         the resolved config it trained with
  WORKDIR/<phase>/<tokenizer file>                    a copy of the tokenizer the phase used

Parameters and the rest of the train state (step, optimizer state, RNG) are separate items, so
the next phase restores only the parameters, and a resumed phase restores both.
"""

import json
import logging
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from trait_rl.configuration import ConfigError
from trait_rl.data import io_utils
from trait_rl.training.train_state import TrainState

PHASES = ("sft", "reward", "rl", "conventional")
# The phase whose final checkpoint each phase starts from.
PREVIOUS_PHASE = {"reward": "sft", "rl": "reward", "conventional": "sft"}
# Each RL arm writes its own directory, WORKDIR/rl_<arm> (":" replaced by "_").
RL_PREFIX = "rl_"
FINAL_FILE = "FINAL"
CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
CORRUPT_DIR = "corrupt_checkpoints"
_ITEMS = ("params", "train")
# Exceptions of Orbax 0.12 and TensorStore for a step with missing, truncated or garbled files:
# KeyError for a missing item, ValueError (JSONDecodeError included) for TensorStore read
# errors and invalid metadata, OSError for missing files.
RESTORE_ERRORS = (KeyError, ValueError, OSError)


# Model fields that leave the parameters unchanged, so a later phase may set them differently.
COMPUTE_ONLY_MODEL_FIELDS = ("dtype", "matmul_dtype", "remat")


class CorruptCheckpointError(RuntimeError):
    """No checkpoint step of a phase could be restored; the message names the directory."""


class CheckpointMismatchError(ConfigError):
    """A readable checkpoint whose parameters differ from the ones this run's config builds.

    The checkpoint is intact, so the fix is a matching config or another workdir, never deleting
    the checkpoint.
    """


def rl_phase_name(arm: str) -> str:
    """Return the directory name of an RL arm's phase, for example rl_single_trait_honesty."""
    return RL_PREFIX + arm.replace(":", "_")


def arm_of_rl_phase(phase: str) -> str:
    """Invert rl_phase_name: rl_single_trait_honesty -> single_trait:honesty."""
    arm = phase.removeprefix(RL_PREFIX)
    return arm.replace("single_trait_", "single_trait:", 1)


def phase_dir(workdir: str | os.PathLike, phase: str) -> pathlib.Path:
    """Return WORKDIR/<phase> as an absolute path (Orbax needs absolute paths)."""
    if phase not in PHASES and not phase.startswith(RL_PREFIX):
        raise ValueError(f"unknown phase {phase!r}; expected one of {PHASES} or rl_<arm>")
    return pathlib.Path(workdir).resolve() / phase


def open_manager(
    directory: str | os.PathLike, train_config: ml_collections.ConfigDict | None = None
) -> ocp.CheckpointManager:
    """Open (or create) the CheckpointManager of a phase directory (for example WORKDIR/sft).

    With a train section, periodic saves happen every `checkpoint_every` steps and the newest
    `max_to_keep` are kept; without one the manager is only for reading.
    """
    directory = pathlib.Path(directory).resolve() / CHECKPOINT_DIR
    if train_config is None:
        options = ocp.CheckpointManagerOptions(read_only=True, create=False)
    else:
        # Orbax's default policy also saves the first step; only the interval and preemption
        # signals should trigger a periodic save here.
        policy = ocp.checkpoint_managers.AnySavePolicy(
            [
                ocp.checkpoint_managers.FixedIntervalPolicy(train_config.checkpoint_every),
                ocp.checkpoint_managers.PreemptionCheckpointingPolicy(),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=policy,
            max_to_keep=train_config.max_to_keep,
            create=True,
        )
    return ocp.CheckpointManager(directory, options=options, item_names=_ITEMS)


def save(manager: ocp.CheckpointManager, state: TrainState, *, force: bool = False) -> bool:
    """Save `state` at its step when the save policy selects that step (always with `force`).

    Returns whether a save started. Saves are asynchronous, but Orbax copies the arrays to host
    memory before returning, so the next step may donate the state's buffers. A state with a NaN
    or Inf raises FloatingPointError instead, so the checkpoints on disk stay finite.
    """
    step = int(state.step)
    if not force and not manager.should_save(step):
        return False
    check_finite_state(state, step)
    train_item = {"step": state.step, "opt_state": state.opt_state, "rng": state.rng}
    args = ocp.args.Composite(
        params=ocp.args.StandardSave(state.params), train=ocp.args.StandardSave(train_item)
    )
    # The decision is made above: force=True stops Orbax from asking the policy a second time.
    return manager.save(step, args=args, force=True)


@jax.jit
def _leaf_is_finite(tree: Any) -> list[jax.Array]:
    return [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]


def check_finite_state(state: TrainState, step: int) -> None:
    """Raise FloatingPointError naming the first non-finite leaf of params or optimizer state."""
    tree = {"params": state.params, "opt_state": state.opt_state}
    leaves_with_path = [
        (path, leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
        if jnp.issubdtype(leaf.dtype, jnp.inexact)
    ]
    flags = jax.device_get(_leaf_is_finite([leaf for _, leaf in leaves_with_path]))
    for (path, _), finite in zip(leaves_with_path, flags, strict=True):
        if not finite:
            raise FloatingPointError(
                f"checkpoint of step {step} not saved because {jax.tree_util.keystr(path)} "
                "contains NaN or Inf. The run stopped, and the newest checkpoint on disk is the "
                "last finite one"
            )


def _write_json_atomically(path: pathlib.Path, payload: dict[str, Any]) -> None:
    text = json.dumps(payload, indent=1, sort_keys=True) + "\n"
    io_utils.write_bytes_atomic(path, text.encode("utf-8"))


def save_final(
    manager: ocp.CheckpointManager, directory: str | os.PathLike, state: TrainState
) -> int:
    """Save the last state (unless the periodic save already did), then write the FINAL marker.

    The marker is written only after every save has finished, and atomically, so a phase that
    crashed mid-save never looks complete. A phase that was already final at this step (a rerun
    that trained nothing) keeps its files untouched. Returns the final step.
    """
    step = int(state.step)
    if manager.latest_step() != step:
        save(manager, state, force=True)
    manager.wait_until_finished()
    if _marker_step_or_none(directory) == step and manager.latest_step() == step:
        return step
    if jax.process_index() == 0:
        _write_json_atomically(pathlib.Path(directory) / FINAL_FILE, {"step": step})
    return step


def _marker_step_or_none(directory: str | os.PathLike) -> int | None:
    try:
        return final_step(directory)
    except ValueError:
        return None  # An invalid marker is rewritten.


def abstract_target(shapes: Any, shardings: Any) -> Any:
    """Return ShapeDtypeStructs carrying `shardings`: Orbax restores each array into them."""
    return jax.tree.map(
        lambda shape, sharding: jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=sharding),
        shapes,
        shardings,
    )


def _restore_step(manager: ocp.CheckpointManager, target: TrainState, step: int) -> TrainState:
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target
    )
    train_target = {"step": target.step, "opt_state": target.opt_state, "rng": target.rng}
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardRestore(target.params),
            train=ocp.args.StandardRestore(train_target),
        ),
    )
    train = restored["train"]
    return TrainState(
        step=train["step"],
        params=restored["params"],
        opt_state=train["opt_state"],
        rng=train["rng"],
    )


def _shapes_by_path(tree: Any) -> dict[str, tuple[int, ...]]:
    return {
        jax.tree_util.keystr(path, simple=True, separator="/"): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def stored_param_shapes(step_dir: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Read the parameter shapes of one checkpoint step, keyed by path ("block/kernel").

    Only the Orbax metadata is read, so this is cheap and works for any saved tree structure.
    """
    handler = ocp.StandardCheckpointHandler()
    try:
        metadata = handler.metadata(pathlib.Path(step_dir) / "params")
    finally:
        handler.close()
    return _shapes_by_path(metadata.tree)


def _count(items: Sequence[Any], noun: str) -> str:
    return f"{len(items)} {noun}" + ("" if len(items) == 1 else "s")


def _shape_differences(
    stored: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]
) -> list[str]:
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    differences = []
    if missing:
        differences.append(f"{_count(missing, 'parameter')} missing from it (first: {missing[0]})")
    if extra:
        differences.append(
            f"{_count(extra, 'parameter')} this run does not build (first: {extra[0]})"
        )
    for path in sorted(set(stored) & set(expected)):
        if stored[path] != expected[path]:
            differences.append(
                f"{path} has shape {stored[path]} there and {expected[path]} in this run"
            )
    return differences


def check_params_match(step_dir: str | os.PathLike, target_params: Any) -> None:
    """Raise CheckpointMismatchError when a step stores other parameter paths or shapes.

    Checked before restoring, so an intact checkpoint of another model is never reported as
    unreadable. Metadata that cannot be read is left to the restore, which reports the step as
    unreadable.
    """
    try:
        stored = stored_param_shapes(step_dir)
    except RESTORE_ERRORS:
        return
    differences = _shape_differences(stored, _shapes_by_path(target_params))
    if differences:
        phase = pathlib.Path(step_dir).parent.parent
        raise CheckpointMismatchError(
            f"the checkpoint {step_dir} is intact, but its parameters do not match the model "
            f"this run builds: {', '.join(differences[:3])}. Use the model settings in "
            f"{phase / CONFIG_FILE}, or another --workdir"
        )


def step_directory(manager: ocp.CheckpointManager, step: int) -> pathlib.Path:
    """Return the directory Orbax writes `step` to (the default step name is the number)."""
    return pathlib.Path(manager.directory) / str(step)


def set_aside_steps(manager: ocp.CheckpointManager, steps: Sequence[int]) -> None:
    """Move unreadable steps to `<phase>/corrupt_checkpoints/<step>` and reload the manager.

    They are kept for inspection rather than deleted. Without the move, Orbax would refuse to
    save those steps again and would count them in `max_to_keep`.
    NOTE: on a multi-host run only process 0 moves the files and no barrier follows.
    """
    if not steps:
        return
    if jax.process_index() == 0:
        corrupt_root = pathlib.Path(manager.directory).parent / CORRUPT_DIR
        corrupt_root.mkdir(parents=True, exist_ok=True)
        for step in steps:
            source = step_directory(manager, step)
            target = corrupt_root / str(step)
            suffix = 1
            while target.exists():
                target = corrupt_root / f"{step}.{suffix}"
                suffix += 1
            if source.exists():
                os.rename(source, target)
                logging.warning("moved unreadable checkpoint %s to %s", source, target)
    manager.reload()


def restore_latest(
    manager: ocp.CheckpointManager,
    target: TrainState,
    step: int | None = None,
    *,
    set_aside_unreadable: bool = True,
) -> TrainState | None:
    """Restore the latest readable (or the given) step into `target`'s shapes and shardings.

    `target` is a TrainState of arrays or ShapeDtypeStructs with shardings on the current mesh,
    which may have a different device count than the mesh that saved the checkpoint. Returns
    None when the phase has no checkpoint yet. A latest step that fails to restore (deleted or
    truncated files) is logged as a warning and the previous step is tried. Unreadable steps
    newer than the restored one are moved to `<phase>/corrupt_checkpoints/` (unless
    `set_aside_unreadable` is False, as for a read-only manager). Raises CorruptCheckpointError
    naming the directory when no step restores, and CheckpointMismatchError for an intact step
    whose parameter shapes differ from `target`'s.
    """
    if step is not None:
        check_params_match(step_directory(manager, step), target.params)
        return _restore_step(manager, target, step)
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        return None
    failures = []
    for candidate in steps:
        check_params_match(step_directory(manager, candidate), target.params)
        try:
            restored = _restore_step(manager, target, candidate)
        except RESTORE_ERRORS as error:
            logging.warning(
                "checkpoint %s is unreadable (%s: %.300s); trying the previous step",
                step_directory(manager, candidate),
                type(error).__name__,
                error,
            )
            failures.append((candidate, error))
            continue
        if set_aside_unreadable:
            set_aside_steps(manager, [bad for bad, _ in failures])
        return restored
    raise CorruptCheckpointError(
        f"no readable checkpoint in {manager.directory}: steps {steps} all failed to restore "
        f"(step {failures[0][0]}: {type(failures[0][1]).__name__}: {failures[0][1]!s:.300}). "
        "Delete that directory to start the phase over"
    )


def train_command(workdir: str | os.PathLike, phase: str, config_arg: str) -> str:
    """Return the command line that runs `phase` and writes its final checkpoint."""
    command = f"python scripts/train.py --config={config_arg} --workdir={workdir}"
    if phase.startswith(RL_PREFIX):
        return f"{command} --phase=rl --config.arm={arm_of_rl_phase(phase)}"
    return f"{command} --phase={phase}"


def final_step(directory: str | os.PathLike) -> int | None:
    """Return the step named by the phase directory's FINAL marker, or None without one."""
    marker = pathlib.Path(directory) / FINAL_FILE
    if not marker.is_file():
        return None
    try:
        return int(json.loads(marker.read_text(encoding="utf-8"))["step"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f'invalid {marker}: expected JSON {{"step": <int>}} ({error}); delete it and rerun '
            "the phase"
        ) from error


def require_final(
    workdir: str | os.PathLike, phase: str, config_arg: str = "configs/default.py"
) -> pathlib.Path:
    """Return WORKDIR/<phase> if that phase finished, else raise FileNotFoundError saying how.

    `config_arg` is the `--config` value shown in the command of the error message.
    """
    directory = phase_dir(workdir, phase)
    if final_step(directory) is None:
        reason = "does not exist" if not directory.is_dir() else f"has no {FINAL_FILE} marker"
        raise FileNotFoundError(
            f"the final checkpoint of phase {phase!r} is missing: {directory} {reason}. "
            f"Create it with: {train_command(workdir, phase, config_arg)}"
        )
    return directory


def restore_final_params(directory: str | os.PathLike, target_params: Any) -> Any:
    """Restore only the parameters of a finished phase into `target_params`' shardings.

    `target_params` is a tree of ShapeDtypeStructs (or arrays) with shardings on the current mesh.
    Raises CheckpointMismatchError when the checkpoint's parameter shapes differ, and
    CorruptCheckpointError when its files cannot be read.
    """
    step = final_step(directory)
    if step is None:
        raise FileNotFoundError(
            f"{directory} has no {FINAL_FILE} marker; the phase did not finish, so rerun it"
        )
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target_params
    )
    check_params_match(pathlib.Path(directory).resolve() / CHECKPOINT_DIR / str(step), target)
    manager = open_manager(directory)
    try:
        restored = manager.restore(
            step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target))
        )
    except RESTORE_ERRORS as error:
        raise CorruptCheckpointError(
            f"the final checkpoint {step_directory(manager, step)} is unreadable "
            f"({type(error).__name__}: {error!s:.300}); delete {directory} and rerun the phase"
        ) from error
    finally:
        manager.close()
    return restored["params"]


def save_phase_files(
    directory: str | os.PathLike,
    config: ml_collections.ConfigDict,
    tokenizer_path: str | os.PathLike | None = None,
) -> pathlib.Path:
    """Check the model settings against earlier runs, then write the config and the tokenizer.

    `directory` is WORKDIR/<phase>. check_phase_config runs first, so a config that cannot
    restore this phase's or its source phases' checkpoints fails before the saved config.json is
    overwritten. Writes the resolved config (JSON), unless the phase has finished (see
    `_record_config`), and a copy of the tokenizer file.
    """
    directory = pathlib.Path(directory)
    config_json = json.loads(config.to_json_best_effort())
    check_phase_config(directory, config_json)
    directory.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        _record_config(directory, config_json)
        if tokenizer_path is not None:
            source = pathlib.Path(tokenizer_path)
            if not source.is_file():
                raise FileNotFoundError(f"tokenizer file not found: {source}")
            io_utils.write_bytes_atomic(directory / source.name, source.read_bytes())
    return directory


def _record_config(directory: pathlib.Path, config_json: dict[str, Any]) -> None:
    """Write config.json, except for a finished phase, whose file keeps the values it ran with.

    A finished phase is restored, not rerun, so a changed setting never reaches it. A phase
    resumed from a checkpoint runs its remaining steps with the new values, which config.json
    then records. Both cases log the fields that changed.
    """
    config_path = directory / CONFIG_FILE
    saved = _saved_config(directory)
    changes = config_differences(saved, config_json) if saved is not None else []
    if saved is not None and (directory / FINAL_FILE).is_file():
        if changes:
            logging.warning(
                "%s has finished and is restored, not rerun, so its config.json keeps the "
                "values it ran with. This run's config differs in: %s",
                directory,
                "; ".join(changes),
            )
        return
    if changes:
        logging.warning(
            "resuming %s with a changed config, which applies from the resumed step on and "
            "which config.json now records: %s",
            directory,
            "; ".join(changes),
        )
    _write_json_atomically(config_path, config_json)


def _saved_config(directory: pathlib.Path) -> dict[str, Any] | None:
    """Return the parsed config.json of a phase that has a checkpoint, else None.

    Raises ValueError when the file is not a JSON config with a model section.
    """
    config_path = directory / CONFIG_FILE
    if not _has_checkpoint(directory) or not config_path.is_file():
        return None
    try:
        saved = json.loads(config_path.read_text(encoding="utf-8"))
        if not isinstance(saved["model"], dict):
            raise TypeError(f"model section is a {type(saved['model']).__name__}")
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"invalid {config_path}: expected the JSON config a training phase writes, with a "
            f"model section ({type(error).__name__}: {error}). Rerun that phase in a new --workdir"
        ) from error
    return saved


def config_differences(
    saved: dict[str, Any], current: dict[str, Any], prefix: str = ""
) -> list[str]:
    """Return "field: saved -> current" for each leaf whose value differs, with dotted names."""
    changes = []
    for key in sorted(set(saved) | set(current)):
        name = f"{prefix}{key}"
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes.extend(config_differences(old, new, f"{name}."))
        elif old != new:
            changes.append(f"{name}: {old!r} -> {new!r}")
    return changes


def source_phases(phase: str) -> list[str]:
    """Return the phases whose final params `phase` restores, nearest first (rl: reward, sft)."""
    phase = "rl" if phase.startswith(RL_PREFIX) else phase
    sources = []
    while phase in PREVIOUS_PHASE:
        phase = PREVIOUS_PHASE[phase]
        sources.append(phase)
    return sources


def model_differences(saved_model: dict[str, Any], model: dict[str, Any]) -> list[str]:
    """Return the model fields whose values differ, leaving out COMPUTE_ONLY_MODEL_FIELDS."""
    fields = (set(saved_model) | set(model)) - set(COMPUTE_ONLY_MODEL_FIELDS)
    return sorted(f for f in fields if saved_model.get(f) != model.get(f))


def _has_checkpoint(directory: pathlib.Path) -> bool:
    steps = directory / CHECKPOINT_DIR
    has_step = steps.is_dir() and any(child.name.isdigit() for child in steps.iterdir())
    return has_step or (directory / FINAL_FILE).is_file()


def _check_saved_model(directory: pathlib.Path, config_json: dict[str, Any]) -> None:
    saved = _saved_config(directory)
    if saved is None:
        return
    saved_model = saved["model"]
    model = config_json.get("model", {})
    fields = model_differences(saved_model, model)
    if fields:
        saved = ", ".join(f"model.{f}={saved_model.get(f)!r}" for f in fields)
        current = ", ".join(f"model.{f}={model.get(f)!r}" for f in fields)
        raise CheckpointMismatchError(
            f"{directory} was trained with {saved} and this run sets {current}. Use the same "
            "model config as that run, or another --workdir"
        )


def check_phase_config(directory: str | os.PathLike, config_json: dict[str, Any]) -> None:
    """Raise CheckpointMismatchError when `config_json` changes a model field of a saved phase.

    Compared are WORKDIR/<phase> itself (when it has a checkpoint to resume) and the phases it
    restores from. A changed field changes the parameters or what they mean, so the restore
    would fail with a shape error or run another model than the one that was trained.
    """
    directory = pathlib.Path(directory).resolve()
    _check_saved_model(directory, config_json)
    for source in source_phases(directory.name):
        _check_saved_model(directory.parent / source, config_json)
