"""`attncredit compare` as a script (the command lives in attncredit/cli/compare.py; `attncredit compare --help` lists its options).

    python scripts/compare_runs.py [options]          # the same as: attncredit compare [options]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from attncredit.cli.compare import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
