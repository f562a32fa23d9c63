#!/usr/bin/env bash
# Train on a Cloud TPU VM slice: create it, install netlab on every worker, run, delete.
#
#   NAME=netlab-v5e ZONE=us-west4-a TYPE=v5litepod-16 RUNTIME=<runtime version> REPO=<git url> \
#     launch/tpu_vm.sh CONFIG[:preset] gs://BUCKET/runs/NAME [--config.a.b=v ...]
#   launch/tpu_vm.sh create | install | run CONFIG WORKDIR ... | delete      (one stage at a time)
#
# RUNTIME differs per TPU generation: list them with
#   gcloud compute tpus tpu-vm versions list --zone=$ZONE
# The workdir must be reachable by every worker (a gs:// bucket or a shared filesystem): each host
# writes its own checkpoint shards there. jax.distributed.initialize() needs no arguments on TPU VMs.
set -euo pipefail
: "${NAME:?set NAME}" "${ZONE:?set ZONE}"
stage=all
case "${1:-}" in create|install|run|delete) stage=$1; shift ;; esac

create()  { gcloud compute tpus tpu-vm create "$NAME" --zone="$ZONE" --accelerator-type="${TYPE:?set TYPE}" \
              --version="${RUNTIME:?set RUNTIME}"; }
on_all()  { gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all --command "$1"; }
install() { on_all "set -e; test -d netlab || git clone ${REPO:?set REPO} netlab; cd netlab && git pull --ff-only \
              && python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu]'"; }
run()     { local config=$1 workdir=$2; shift 2
            on_all "cd netlab && .venv/bin/python -m netlab.main --config $config --workdir $workdir $*"; }
delete()  { gcloud compute tpus tpu-vm delete "$NAME" --zone="$ZONE" --quiet; }

case $stage in
  create) create ;;
  install) install ;;
  run) run "$@" ;;
  delete) delete ;;
  all) create; install; trap delete EXIT; run "$@" ;;
esac
