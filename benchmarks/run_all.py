"""Run every benchmark script in this directory, one after the other."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
# The last two need root (and Slurm).
SCRIPTS = ["core.py", "console.py", "multi_user.py", "htex_slurm.py"]

if __name__ == "__main__":
    failed = 0
    for name in SCRIPTS:
        print(f"== {name}", flush=True)
        failed |= subprocess.run([sys.executable, str(HERE / name)]).returncode
    sys.exit(failed)
