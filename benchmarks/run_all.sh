#!/usr/bin/env bash
# Run our benchmarks, then install (once) and run the peers, writing JSON under benchmarks/results/.
#   bash benchmarks/run_all.sh            # everything
#   SKIP_PEERS=1 bash benchmarks/run_all.sh
# A failed peer install or run is reported and skipped; our benchmarks still run.
set -u
cd "$(dirname "$0")/.."
py=.venv/bin/python
echo "== machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(nproc) cores"
echo "== load before: $(uptime)"

status=0
for bench in bench_mfu bench_sampler bench_grpo bench_scaling; do
  echo "== $bench (load: $(cut -d' ' -f1-3 /proc/loadavg))"
  "$py" "benchmarks/$bench.py" || { echo "$bench failed" >&2; status=1; }
done

if [[ -z "${SKIP_PEERS:-}" ]]; then
  PYTHON="${PYTHON:-python3}" bash benchmarks/peers/install.sh || echo "a peer install failed; see above" >&2
  run_peer() {  # venv, script
    local python="benchmarks/.venvs/$1/bin/python"
    if [[ ! -f "benchmarks/.venvs/$1/.installed" ]]; then
      echo "== skip $2: venv $1 is not installed" >&2
      return
    fi
    echo "== peer $2 (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    (cd benchmarks/peers && "../../$python" "$2") || { echo "$2 failed" >&2; status=1; }
  }
  run_peer trl hf_generate.py
  run_peer trl trl_grpo.py
  for script in tunix_sampler.py tunix_grpo.py; do
    if [[ -f "benchmarks/peers/$script" ]]; then
      run_peer tunix "$script"
    else
      echo "== skip $script: not written yet" >&2
    fi
  done
fi
echo "== load after: $(uptime)"
exit $status
