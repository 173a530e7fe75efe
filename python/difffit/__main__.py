"""``python -m difffit``: the same command line as the ``difffit`` script."""
import sys

from .cli import main

sys.exit(main())
