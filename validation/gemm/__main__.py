"""``python -m validation.gemm``: the launchers start every rank by this name."""

import sys

from validation.gemm.cli import main

if __name__ == "__main__":
    sys.exit(main())
