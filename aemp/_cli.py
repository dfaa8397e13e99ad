# The aemp command. It parses arguments and hands over to the library; it
# holds no logic of its own. This version knows the commands below; the
# configuration-profile and network subcommands arrive with the network
# layer and are refused with a clear message until then.

from __future__ import annotations

import argparse
import sys

from . import __version__

_LATER = frozenset(
    {"snd", "cal", "mon", "nodes", "db", "trace", "run", "profile", "showconfig"}
    | {"showprofile", "gensecret", "gencert", "setsecret", "setseeds", "setbinds", "setnodeid"}
)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="aemp",
        description="aemp: actor-style message passing between processes and machines.",
        epilog="Commands for configuration profiles and for talking to running nodes "
        "are not part of this version yet.",
    )
    ap.add_argument("--version", action="version", version=f"aemp {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("version", help="print the version of aemp")
    h = sub.add_parser("help", help="show help for a command")
    h.add_argument("topic", nargs="?", help="the command to explain")
    return ap


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in and args_in[0] in _LATER:
        print(
            f"aemp: {args_in[0]!r} is not available in aemp {__version__} yet; "
            "see 'aemp --help' for what is",
            file=sys.stderr,
        )
        return 2
    ap = _parser()
    args = ap.parse_args(args_in)
    if args.command == "version":
        print(f"aemp {__version__}")
    elif args.command == "help" and args.topic:
        ap.parse_args([args.topic, "--help"])
    else:
        ap.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
