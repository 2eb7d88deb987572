"""`python -m sentitune …`: the command line without the installed `sentitune` script."""

import sys

from sentitune.cli import main

sys.exit(main())
