"""``python -m flowforge`` (and ``torchrun -m flowforge``): the ``flowforge`` command."""

import sys

from flowforge.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
