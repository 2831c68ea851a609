"""python -m codec.data prepare …: see codec/data/prepare.py."""

from __future__ import annotations

import logging
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("prepare",):
        print("usage: python -m codec.data prepare --src CLIPS --out DIR [--size 256 --size 128]", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from codec.data.prepare import main as prepare_main

    return prepare_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
