"""Command-line entry point shared by scripts/*.py: one-line errors for bad input.

A user-facing error (an invalid config, input file or checkpoint) prints `error: <message>` to
stderr and exits with status 1, because its message already names the field or file:line and
the fix. A programming error keeps its traceback. The rule that separates the two:

- an exception class defined in this package (ConfigError, SweepError, JsonlError,
  AttackTemplateError, CorruptCheckpointError, PublicEvalError, ...);
- FileNotFoundError, NotADirectoryError, IsADirectoryError and FileExistsError;
- ValueError or NotImplementedError raised by a `raise` statement in this project's source
  (the validation code), not by a library or by a failed unpacking.

SystemExit passes through, so training's `Preempted` still exits with status 75.
"""

import functools
import linecache
import pathlib
import re
import sys
from collections.abc import Callable, Sequence

from absl import app

from trait_rl import host_memory

_PROJECT_DIRS = (
    pathlib.Path(__file__).resolve().parent,
    pathlib.Path(__file__).resolve().parent.parent / "scripts",
)
_PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError)


def _raised_in_project(error: BaseException) -> bool:
    """True when the innermost frame of the traceback is a `raise` statement in this project."""
    traceback = error.__traceback__
    if traceback is None:
        return False
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    filename = pathlib.Path(traceback.tb_frame.f_code.co_filename).resolve()
    if not any(filename.is_relative_to(directory) for directory in _PROJECT_DIRS):
        return False
    line = linecache.getline(str(filename), traceback.tb_lineno).strip()
    return line.startswith("raise ")


def _path_error_message(error: OSError) -> str:
    """Return the project's own message, or `<reason>: <path>` for an error from the OS."""
    if error.filename is not None and error.strerror:
        return f"{error.strerror}: {error.filename}"
    return str(error)


def user_error_message(error: BaseException) -> str | None:
    """Return the one-line message of a user-facing error, or None for a programming error."""
    if isinstance(error, _PATH_ERRORS):
        return _path_error_message(error)
    if type(error).__module__.split(".")[0] == "trait_rl":
        return str(error)
    if isinstance(error, ValueError | NotImplementedError) and _raised_in_project(error):
        return str(error)
    return None


def catch_user_errors(main: Callable[[list[str]], object]) -> Callable[[list[str]], object]:
    """Wrap a script's `main` so that user-facing errors exit with `error: <message>`."""

    @functools.wraps(main)
    def wrapped(argv: list[str]) -> object:
        try:
            return main(argv)
        except (OSError, ValueError, RuntimeError) as error:
            message = user_error_message(error)
            if message is None:
                raise
            raise SystemExit(f"error: {message}") from None

    return wrapped


def _unknown_override(argv: Sequence[str], error: BaseException) -> str | None:
    """Return a message naming the `--config.*` override whose field does not exist, or None.

    ml_collections raises AttributeError(KeyError("'name'\\nDid you mean ...")) while parsing an
    override of a missing field, before `main` runs.
    """
    detail = error
    while isinstance(detail, BaseException) and detail.args:
        detail = detail.args[0]
    lines = str(detail).splitlines() or [""]
    name = lines[0].strip("'\"")
    for arg in argv[1:]:
        match = re.fullmatch(r"--(\w+)\.([\w.]+)(=.*)?", arg)
        if match and name in match.group(2).split("."):
            hint = f" ({lines[1].strip()})" if len(lines) > 1 else ""
            return (
                f"{arg}: unknown config field {match.group(2)!r}{hint}; check the field name "
                f"in the --{match.group(1)} file"
            )
    return None


def parse_flags(argv: list[str]) -> list[str]:
    """Parse flags like absl's default parser, but report an unknown config field in one line."""
    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError) as error:
        message = _unknown_override(argv, error)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(1) from None


def run(main: Callable[[list[str]], object]) -> None:
    """Run a script's `main` with absl, turning user-facing errors into one-line messages.

    With TRAIT_RL_RETAIN_HOST_MEMORY=1 it first sets the host allocator to keep freed memory
    (`host_memory.retain_freed_memory`).
    """
    try:
        host_memory.apply_env_setting()
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    app.run(catch_user_errors(main), flags_parser=parse_flags)


def check_workdir(workdir: str) -> pathlib.Path:
    """Raise NotADirectoryError when `--workdir` names an existing file."""
    path = pathlib.Path(workdir)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(
            f"--workdir={workdir} is an existing file, not a directory; choose a directory path"
        )
    return path
