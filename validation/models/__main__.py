"""``python -m validation.models``: the launchers start every rank by this name."""

import sys

from validation.models.cli import main

if __name__ == "__main__":
    sys.exit(main())
