"""``python -m stack.bench``: see :mod:`stack.bench.cli`."""

import sys

from stack.bench.cli import main

sys.exit(main())
