"""python -m codec.data prepare …: see codec/data/prepare.py; python -m codec.data enhance …: see codec/data/enhancement.py."""

from __future__ import annotations

import logging
import sys

USAGE = """usage: python -m codec.data prepare --src CLIPS --out DIR [--size 256 --size 128]
       python -m codec.data enhance --data DIR [--size 64] [--qp 40 --qp 55 ...]"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("prepare", "enhance"):
        print(USAGE, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if argv[0] == "enhance":
        from codec.data.enhancement import main as enhance_main

        return enhance_main(argv[1:])
    from codec.data.prepare import main as prepare_main

    return prepare_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
