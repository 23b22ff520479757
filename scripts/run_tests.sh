#!/usr/bin/env bash
# Set up .venv (if needed) and run the whole test suite, slow real-model tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# huge-page malloc for XLA:CPU buffers (see neuroal_jax/runtime.py): the suite runs faster
export GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.malloc.hugetlb=1"
exec .venv/bin/python -m pytest -n 2 --dist loadgroup "$@"
