"""`python -m cohort ...` is the `cohort` command."""

import sys

from cohort.replication.cli import main

sys.exit(main())
