"""`python -m gmlake replay [--config STR] [--capacity BYTES] TRACE...`: replays allocation traces
through gmlake on a simulated device and prints the table of the `gmlake-replay` command."""
import argparse
import sys

from . import replay


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m gmlake")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("replay", help="replay traces through gmlake on a simulated device")
    r.add_argument("--config", default=None, help='gmlake configuration, e.g. "frag_limit:64MB"')
    r.add_argument("--capacity", type=int, default=None, help="simulated device memory in bytes")
    r.add_argument("traces", nargs="+")
    args = parser.parse_args(argv)
    rows = []
    for path in args.traces:
        try:
            rows.append(replay(path, args.config, args.capacity))
        except (OSError, ValueError, RuntimeError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    print(f"{'trace':<24} {'allocs':>9} {'peak GB':>10} {'gmlake GB':>12} {'util':>8} {'native GB':>12} "
          f"{'native':>8} {'ooms':>5} {'stitches':>8} {'reuses':>7} {'driver ms':>11} {'native ms':>11} "
          f"{'ns/op':>7} {'leaks h/r/m':>11}")
    for r in rows:
        print(f"{r['trace']:<24} {r['allocs']:>9} {r['peak_active_bytes'] / 1e9:>10.2f} "
              f"{r['peak_reserved_bytes'] / 1e9:>12.2f} {r['utilization']:>8.4f} "
              f"{r['native_peak_reserved_bytes'] / 1e9:>12.2f} {r['native_utilization']:>8.4f} {r['ooms']:>5} "
              f"{r['num_stitches']:>8} {r['num_stitch_reuses']:>7} {r['estimated_driver_us'] / 1e3:>11.1f} "
              f"{r['native_estimated_driver_us'] / 1e3:>11.1f} {r['replay_ns_per_op']:>7.0f} "
              f"{r['end_handles']:>3}/{r['end_ranges']}/{r['end_mappings']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
