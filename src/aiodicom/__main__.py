"""`python -m aiodicom`: the command line without the console script (venvs, profilers)."""

import sys

from aiodicom.app.cli.main import main

sys.exit(main())
