"""`python -m cohort.replication.cli ...` is the `cohort` command (replicas are spawned this way)."""

import sys

from cohort.replication.cli import main

sys.exit(main())
