"""The `adoptstream-dev` command: the local broker, the demo and the traffic generator."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from adoptstream.cli import dispatch

# subcommand -> module with `add_parser(subparsers)`; the parser sets `func(args) -> int`.
SUBCOMMANDS: dict[str, str] = {
    "kafka": "adoptstream_dev.localkafka",
    "demo": "adoptstream_dev.demo",
    "generate": "adoptstream_dev.generate",
    "fuzz": "adoptstream_dev.fuzz",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="adoptstream-dev",
        description="adoptstream development tooling: local Kafka broker, demo, synthetic traffic.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS.values():
        importlib.import_module(module).add_parser(sub)
    return dispatch(parser.parse_args(list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    sys.exit(main())
