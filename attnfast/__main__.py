"""``python -m attnfast``: the ``attnfast`` command (see :mod:`attnfast.cli`)."""
import sys

from attnfast.cli import main

if __name__ == "__main__":
    sys.exit(main())
