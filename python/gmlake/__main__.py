"""`python -m gmlake replay [--config STR] [--capacity BYTES] [--fit] [--plot FILE] [--passes N]
[--device N] [--late-events] TRACE...`:
replays allocation traces through gmlake and models of PyTorch's allocators on a simulated device
and prints the table of the `gmlake-replay` command."""
import argparse
import os
import sys

from . import _core


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m gmlake")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("replay", help="replay traces through gmlake on a simulated device")
    r.add_argument("--config", default=None, help='gmlake configuration, e.g. "frag_limit:64MB"')
    r.add_argument("--capacity", type=int, default=None, help="simulated device memory in bytes")
    r.add_argument("--fit", action="store_true", help="also find each allocator's smallest capacity")
    r.add_argument("--plot", default=None, help="draw the bytes over each trace into FILE (.svg or .html)")
    r.add_argument("--passes", type=int, default=1, help="also replay each trace N times on one allocator")
    r.add_argument("--device", type=int, default=None, help="for a snapshot: the GPU whose trace to replay")
    r.add_argument("--late-events", action="store_true",
                   help="model a GPU that runs behind the CPU: events complete only at a synchronization")
    r.add_argument("traces", nargs="+")
    args = parser.parse_args(argv)
    try:
        _, table = _core.replay([os.fspath(p) for p in args.traces], args.config, args.capacity, args.fit,
                                args.plot, args.passes, args.device, args.late_events)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
