#!/usr/bin/env bash
# One process on this machine.   launch/local.sh CONFIG[:preset] WORKDIR [--config.a.b=v ...]
# Fake CPU devices for sharding experiments: NETLAB_LOCAL_DEVICES=8 launch/local.sh ...
set -euo pipefail
config=$1; workdir=$2; shift 2
if [[ -n "${NETLAB_LOCAL_DEVICES:-}" ]]; then
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${NETLAB_LOCAL_DEVICES}"
fi
exec "${PYTHON:-python}" -m netlab.main --config "$config" --workdir "$workdir" "$@"
