"""``python -m nbdl``: the same as the ``nbdl`` command."""

import sys

from ._cli import main

sys.exit(main())
