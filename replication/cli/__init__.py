"""The `cohort` command line: one module per subcommand, each with `register(subparsers)` and the
`run(args) -> exit status` it sets as the subcommand's handler.

Why one entry point: users meet Cohort through `cohort demo`, serve and call their own classes with
`cohort serve`/`call`/`status`, test stack specs with `cohort sim`, and measure with
`cohort bench`. Errors print as one or two lines (what failed, what to do); `-v` adds the
traceback. Exit status: 0 done, 1 failed, 2 wrong usage, 3 `status` found a diverged replica.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from cohort.replication.cli import bench, call, demo, serve, sim, status
from cohort.replication.cli.options import UsageError

from cohort import __version__
from cohort.errors import CohortError

SUBCOMMANDS = (demo, serve, call, status, sim, bench)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cohort",
        description="Fault-tolerant replicated Python objects: serve a @replicated class from a "
        "group of replicas, call it through a failover proxy, check and measure the stack.",
        epilog="`cohort COMMAND --help` explains each command's arguments.",
    )
    p.add_argument("--version", action="version", version=f"cohort {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="print tracebacks of errors")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv or "--verbose" in argv
    args = parser().parse_args(argv)
    verbose = verbose or getattr(args, "verbose", False)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130
    except UsageError as e:
        _explain(args.cmd, e, verbose)
        return 2
    except (CohortError, OSError) as e:  # a failure we can name: one or two lines, no traceback
        _explain(args.cmd, e, verbose, name=type(e).__name__)
        return 1


def _explain(cmd: str, e: BaseException, verbose: bool, name: str = "") -> None:
    if verbose:
        traceback.print_exception(e)
    head = f"cohort {cmd}: " + (f"{name}: " if name else "")
    print(head + str(e), file=sys.stderr)
    if not verbose and name:
        print("  (run with -v for the traceback)", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
