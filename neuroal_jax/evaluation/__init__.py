"""Evaluation: data sets and windows (data.py), perplexity (perplexity.py), zero-shot through lm-eval
(zeroshot.py, with the offline task in tasks/)."""
