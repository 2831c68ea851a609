"""python -m bench SUBCOMMAND: the benchmarks, one sub-command per module.

    python -m bench bitstream --json OUT.json     # motion bitstream (bench/bitstream.py)
    python -m bench rd --json OUT.json --plot OUT.png   # rate-quality vs video codecs (bench/rd.py)
    python -m bench call --seconds N --json OUT.json    # a real call over loopback (bench/call.py)
    python -m bench speed --json OUT.json               # model encode/render ms per preset (bench/speed.py)
    python -m bench signaling --clients 500 2000 --json OUT.json   # signaling load, 1 and 3 instances (bench/signaling_load.py)
    python -m bench fuzz --total 1000000 --json OUT.json   # every parser fed mutated inputs (bench/fuzz.py)
    python -m bench priors --json OUT.json              # the controller's motion priors on real faces (bench/motion_priors.py)
    python -m bench calibration --people val --json OUT.json   # the sender's keypoint calibration on held-out frames (bench/calibration.py)

Adding one: give the module an ``add_<name>_parser(subparsers)`` that registers the sub-command and
a ``run_<name>_from_args(args) -> int``, and list the pair in ``_COMMANDS``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from bench.bitstream import add_bitstream_parser, run_bitstream_from_args
from bench.calibration import add_calibration_parser, run_calibration_from_args
from bench.call import add_call_parser, run_call_from_args
from bench.fuzz import add_fuzz_parser, run_fuzz_from_args
from bench.motion_priors import add_priors_parser, run_priors_from_args
from bench.rd import add_rd_parser, run_rd_from_args
from bench.signaling_load import add_signaling_parser, run_signaling_from_args
from bench.speed import add_speed_parser, run_speed_from_args

_COMMANDS: dict[str, tuple[Callable[[argparse._SubParsersAction], None], Callable[[argparse.Namespace], int]]] = {  # type: ignore[type-arg]
    "bitstream": (add_bitstream_parser, run_bitstream_from_args),
    "rd": (add_rd_parser, run_rd_from_args),
    "call": (add_call_parser, run_call_from_args),
    "speed": (add_speed_parser, run_speed_from_args),
    "signaling": (add_signaling_parser, run_signaling_from_args),
    "fuzz": (add_fuzz_parser, run_fuzz_from_args),
    "priors": (add_priors_parser, run_priors_from_args),
    "calibration": (add_calibration_parser, run_calibration_from_args),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="kpcall benchmarks")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser, _ in _COMMANDS.values():
        add_parser(subparsers)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    return _COMMANDS[args.command][1](args)


if __name__ == "__main__":
    sys.exit(main())
