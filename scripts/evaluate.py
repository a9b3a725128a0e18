"""`attncredit eval` as a script (the command lives in attncredit/cli/eval.py; `attncredit eval --help` lists its options).

    python scripts/evaluate.py [options]          # the same as: attncredit eval [options]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from attncredit.cli.eval import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
