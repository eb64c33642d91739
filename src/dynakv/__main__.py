"""`python -m dynakv` is the `dynakv` command."""

import sys

from dynakv.cli import main

sys.exit(main())
