#!/usr/bin/env bash
# Prepare a wheelhouse for a GPU machine that has JAX (CUDA), flax, optax, orbax, chex, torch and
# torch-geometric but no network and not netlab's other pure-Python dependencies.
#
#     bash bench/device_wheels.sh [DEST]          # default DEST: runs/wheels (ignored by git)
#
# Downloads, without their dependencies (the machine has those), Python 3.12 wheels of the packages
# such an image lacks: jraph and ml-collections (netlab imports them) and tensorboardX (for
# `python -m netlab.main` there). Copy DEST next to the repository on that machine, then run the
# check with the one line this script prints at the end (it installs the wheels into /tmp/site
# and runs bench/accelerator.py, writing its JSON to $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${1:-runs/wheels}"
PY="${PYTHON:-python3}"
PACKAGES=(jraph==0.0.6.dev0 ml-collections==1.1.0 tensorboardX==2.6.5)

mkdir -p "$DEST"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEST" "${PACKAGES[@]}"
ls -l "$DEST"
cat <<EOF

On the device, from the repository root (OUT: the folder for the JSON):
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $DEST/*.whl && export PYTHONPATH=/tmp/site && PYTHONUNBUFFERED=1 python3 bench/accelerator.py --out \$OUT
EOF
