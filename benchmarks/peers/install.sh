#!/usr/bin/env bash
# Create one virtual environment per peer under benchmarks/.venvs/ and install it there.
# Peers are never dependencies of trait_rl. Re-running skips environments already marked done.
set -u
here="$(cd "$(dirname "$0")/.." && pwd)"
venvs="$here/.venvs"
python="${PYTHON:-python3}"
mkdir -p "$venvs"

install_peer() {  # name, then pip arguments in install order (one pip call per argument group)
  local name="$1"
  shift
  local venv="$venvs/$name"
  if [[ -f "$venv/.installed" ]]; then
    echo "peer $name: already installed in $venv"
    return 0
  fi
  "$python" -m venv "$venv" || return 1
  "$venv/bin/python" -m pip install --quiet --upgrade pip || return 1
  local group
  for group in "$@"; do
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install --quiet $group || {
      echo "peer $name: pip install $group failed" >&2
      return 1
    }
  done
  touch "$venv/.installed"
  echo "peer $name: installed in $venv"
}

status=0
# torch first, as the CPU wheel: a CUDA build would pull gigabytes of libraries for nothing.
install_peer trl "torch==2.13.0" "trl transformers" || status=1
install_peer tunix "google-tunix" || status=1
exit $status
