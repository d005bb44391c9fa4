"""`python -m modelyard` is the `modelyard` command."""

import sys

from modelyard.cli.main import main

sys.exit(main())
