#!/usr/bin/env bash
# The main job: set up .venv (if needed), then prune SmolLM2-135M (the embedded default model, shipped on
# PyPI) with Wanda at 70 %, calibration and evaluation on offline pydoc text, and compare dense, uniform,
# OWL and NeuroAL (both steps). Prints a perplexity table; writes models, reports and plots to runs/main/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/neuroal-jax compare --model smollm2-135m --method wanda --sparsity 0.7 \
  --top-ups uniform,owl,neuroal --calib pydoc --eval pydoc --nsamples 32 --seqlen 256 \
  --out runs/main --force "$@"
