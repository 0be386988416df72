"""``python -m samr1 ...`` runs the ``samr1`` command line (the same as the ``samr1`` console script)."""

import sys

from samr1.cli import main

if __name__ == "__main__":
    sys.exit(main())
