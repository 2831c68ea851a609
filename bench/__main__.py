"""python -m bench: not built yet."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="bench (not built yet)")
    parser.parse_args(argv)
    print("python -m bench: this stage is not built yet (see the open issues).", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
