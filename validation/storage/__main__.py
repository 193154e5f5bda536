"""``python -m validation.storage``: the launchers start every rank by this name."""

import sys

from validation.storage.cli import main

if __name__ == "__main__":
    sys.exit(main())
