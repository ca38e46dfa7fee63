# SPDX-License-Identifier: Apache-2.0
"""``kiosk-provision``: the installer's tool (only its help so far)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kiosk-provision",
                                     description="Provision a kiosk: keys, certificate, service, self-test.")
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
