"""``python -m validation.allreduce``: the launchers start every rank by this name."""

import sys

from validation.allreduce.cli import main

if __name__ == "__main__":
    sys.exit(main())
