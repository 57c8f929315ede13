"""The `adoptstream` command: one subcommand per job, each defined next to the code it drives."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> module with `add_parser(subparsers)`; the parser sets `func(args) -> int`.
# Development tooling (local broker, demo, generator) is the separate `adoptstream-dev` command.
SUBCOMMANDS: dict[str, str] = {
    "worker": "adoptstream.app",
    "publish": "adoptstream.publish",
    "rules": "adoptstream.rollout.cli",
    "gate": "adoptstream.rollout.gate",
    "report": "adoptstream.report.cli",
    "reset": "adoptstream.runtime.reset",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or (when `only` names a subcommand) one that imports just that subcommand."""
    parser = argparse.ArgumentParser(
        prog="adoptstream",
        description="Real-time streaming adoption monitor: Kafka usage events -> exact Prometheus gauges.",
    )
    from adoptstream import __version__

    parser.add_argument("--version", action="version", version=f"adoptstream {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in SUBCOMMANDS.items():
        if only is not None and name != only:
            continue
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = argv[0] if argv else None
    parser = build_parser(first if first in SUBCOMMANDS else None)
    return dispatch(parser.parse_args(argv))


def dispatch(args: argparse.Namespace) -> int:
    """Run the subcommand `args` chose; its exit code (130 after Ctrl-C, 0 when stdout went away)."""
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
