"""``python -m raymlp`` is the ``raymlp`` command."""

import sys

from raymlp.cli import main

sys.exit(main())
