"""``tools/handle_cost.py``, which the throughput docs quote, still runs against today's scheduler
(its stand-in producer must offer what the scheduler calls on the real one)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_handle_cost_measures_each_batch_size():
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "handle_cost.py"), "--tasks", "60", "--batch", "1,6"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("batch")]
    assert [line.split(":")[0].split() for line in lines] == [["batch", "1"], ["batch", "6"]]
    for line in lines:
        assert float(line.split(":")[1].split()[0]) > 0, line
