"""``python -m runtime``: see ``runtime.cli`` (or ``python -m runtime --help``)."""

import sys

from runtime.cli import main

if __name__ == "__main__":
    sys.exit(main())
