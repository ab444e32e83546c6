"""``python -m vlsm_batch``: the same command line as the ``vlsm-batch`` script."""

from .cli import main

raise SystemExit(main())
