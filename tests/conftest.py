import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import install_cleanup, kafka, scheduler, settings  # noqa: E402,F401  (fixtures shared by integration and chaos)

install_cleanup()
