"""``python -m perdure``: the command line."""

import sys

from perdure.tools.cli import main

sys.exit(main())
