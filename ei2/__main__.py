"""``python -m ei2``: the command line lives in :mod:`ei2.cli.main`."""
import sys

from .cli.main import main

sys.exit(main())
