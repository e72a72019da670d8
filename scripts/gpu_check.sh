#!/usr/bin/env bash
# The GPU check: run from the repository root on a machine with CUDA GPUs.
#
# It times model steps per backbone (bf16 + channels_last against fp32), one
# training epoch on every GPU (NCCL, SyncBatchNorm) and predict of a 4096 x 4096
# scene on every GPU, and prints one JSON line per part (see `terraseg bench gpu`).
#
# A bare machine with Python and torch but without terraseg's other packages gets
# them from wheels placed beforehand in .whl/ (for machines without a package
# index; `pip download` them elsewhere for the machine's Python), else from the index.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device visible to torch")'
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/terraseg-site .whl/*.whl
    export PYTHONPATH="/tmp/terraseg-site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
elif ! "$PYTHON" -c 'import rasterio, dask.distributed, zarr, mlflow, geopandas' 2>/dev/null; then
    "$PYTHON" -m pip install -q -e .
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 480 "$PYTHON" -m terraseg.workflows.cli.main bench gpu "$@"
