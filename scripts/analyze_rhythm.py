"""`attncredit analyze` as a script (the command lives in attncredit/cli/analyze.py; `attncredit analyze --help` lists its options).

    python scripts/analyze_rhythm.py [options]          # the same as: attncredit analyze [options]
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see attncredit/cli/analyze.py

from attncredit.cli.analyze import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
