"""What a run writes: atomic files and folders with our marker and lock (files.py), the masks checkpoint
(checkpoint.py), report.json (report.py), plots (plots.py) and block-streamed, resumable run folders
(streaming.py)."""
