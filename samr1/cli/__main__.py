import sys

from samr1.cli import main

sys.exit(main())
