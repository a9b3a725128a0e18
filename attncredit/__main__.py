"""``python -m attncredit ...``: the same as the ``attncredit`` console command (attncredit.cli)."""

from attncredit.cli import main

raise SystemExit(main())
