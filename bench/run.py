"""Run aemp's benchmarks: ``python bench/run.py [NAME ...]``.

Each benchmark measures aemp and, in the same run, a reference doing the
same work without aemp, and ends with one JSON object per figure per line
(the figure, its unit, the reference's figure and their ratio). Every
benchmark is bounded in count and time.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

BENCHES = ["local", "remote", "db", "mailbox", "supervisor", "pool", "names", "stream"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {BENCHES})")
    ap.add_argument("--quick", action="store_true", help="fewer messages (a smoke run)")
    args = ap.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHES]
    if unknown:
        ap.error(f"unknown benchmark {unknown[0]!r}: choose from {', '.join(BENCHES)}")
    results = []
    for name in args.names or BENCHES:
        mod = importlib.import_module(f"bench_{name}")
        results.extend(mod.run(quick=args.quick))
    for r in results:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
