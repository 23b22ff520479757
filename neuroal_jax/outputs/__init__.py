"""What a run writes: atomic files and folders with our marker and lock (files.py), the masks checkpoint
(checkpoint.py), report.json (report.py) and plots (plots.py). Block-streamed, resumable run folders, which
also write model shards (converters), are `neuroal_jax.streaming`, a layer above this one."""
