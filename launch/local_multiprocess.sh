#!/usr/bin/env bash
# N JAX processes on localhost, each with NETLAB_LOCAL_DEVICES fake CPU devices (default 4), joined
# through a coordinator on a free local port: a multi-host run on one machine.
#
#   launch/local_multiprocess.sh N CONFIG[:preset] [WORKDIR] [--config.a.b=v ...]
#   launch/local_multiprocess.sh 2 configs/moe/lm_tiny.py runs/lm_2proc
#
# If one process dies, the others are stopped and the script exits with its status. SIGTERM/SIGINT
# to this script reach every process (each saves the same step and exits 0).
set -uo pipefail
n=${1:?usage: $0 N CONFIG [WORKDIR] [--config.a.b=v ...]}; config=${2:?usage: $0 N CONFIG [WORKDIR] ...}; shift 2
workdir=runs/multiprocess
if [[ $# -gt 0 && $1 != --* ]]; then workdir=$1; shift; fi
python=${PYTHON:-python}
port=${NETLAB_PORT:-$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
devices=${NETLAB_LOCAL_DEVICES:-4}

pids=()
for ((i = 0; i < n; i++)); do
  NETLAB_COORDINATOR="localhost:$port" NETLAB_NUM_PROCESSES=$n NETLAB_PROCESS_ID=$i \
  JAX_PLATFORMS=cpu XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$devices" \
    "$python" -m netlab.main --config "$config" --workdir "$workdir" "$@" &
  pids+=($!)
done

forward() { kill -s "$1" "${pids[@]}" 2>/dev/null; }
trap 'forward TERM' TERM
trap 'forward INT' INT

status=0
alive=("${pids[@]}")
while ((${#alive[@]} > 0)); do
  done_pid=
  wait -n -p done_pid "${alive[@]}"
  rc=$?
  [[ -z "$done_pid" ]] && continue              # interrupted by a trapped signal: keep waiting
  alive=($(for p in "${alive[@]}"; do [[ $p != "$done_pid" ]] && echo "$p"; done))
  if ((rc != 0 && status == 0)); then
    status=$rc
    echo "local_multiprocess: process $done_pid exited with status $rc; stopping the others" >&2
    ((${#alive[@]} > 0)) && kill -TERM "${alive[@]}" 2>/dev/null
    (sleep 20; kill -KILL "${pids[@]}" 2>/dev/null) &
  fi
done
exit $status
