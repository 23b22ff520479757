"""scripts/device_check.py --smoke: every part of the prepared GPU check runs at toy scale on a CPU (so the script
that a lent GPU machine runs once never rots), and writes its JSON and table."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cli_run import REPO, cli_env

pytestmark = pytest.mark.slow


def test_device_check_smoke_runs_every_part(tmp_path):
    proc = subprocess.run([sys.executable, "-u", str(REPO / "scripts" / "device_check.py"), str(tmp_path), "--smoke"],
                          cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "device_check.json").read_text())
    parts = result["parts"]
    assert set(parts) == {"kernel", "topk", "search", "search_dense_model", "sweep"}
    assert all(p["status"] == "ok" for p in parts.values()), parts
    assert parts["kernel"]["mismatches"] == [] and parts["kernel"]["cases"] >= 28
    assert parts["search"]["lambda_chunk_block"] >= 1 and parts["search"]["seconds_block_step"] > 0
    assert "| search |" in (tmp_path / "device_check.md").read_text()
