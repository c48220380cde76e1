"""``python -m benchmark`` and the ``mtvae-bench`` command.

The commands import torch, which takes seconds: a Ctrl-C or SIGTERM then exits with one line,
not the import's traceback (nothing has started).
"""

import os
import sys

from benchmark.processes import terminate_as_interrupt


def _main(prog: str | None = None) -> int:
    try:
        with terminate_as_interrupt():
            from benchmark.cli import main
    except KeyboardInterrupt:
        sys.stdout.flush()
        print("interrupted before the command started", file=sys.stderr, flush=True)
        # Not a return: CPython marks a KeyboardInterrupt raised in code that a C extension runs as it is
        # imported (torch's) as unhandled, even once caught here, and then ends by SIGINT, not with 130.
        # Nothing has started that would need cleaning up.
        os._exit(130)
    return main() if prog is None else main(prog=prog)


def script() -> int:
    """The ``mtvae-bench`` command: ``python -m benchmark`` under its own name in usage lines."""
    return _main("mtvae-bench")


if __name__ == "__main__":
    raise SystemExit(_main())
