#!/usr/bin/env bash
# Set up .venv and .venv-compressed (if needed), check the code with ruff and run the whole test suite, slow
# real-model tests included: everything in .venv (transformers 5), then the compressed-checkpoint tests in
# .venv-compressed (skipped in .venv). Arguments go to the first run only, and then ruff and the second run are
# left out.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# huge-page malloc for XLA:CPU buffers (see neuroal_jax/runtime.py): the suite runs faster
export GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.malloc.hugetlb=1"
[ $# -gt 0 ] || .venv/bin/ruff check   # line length, import order, pyflakes (pyproject.toml)
.venv/bin/python -m pytest -n 2 --dist loadgroup "$@"
[ $# -gt 0 ] || exec .venv-compressed/bin/python -m pytest -n 2 tests/test_compressed.py
