#!/usr/bin/env python
"""Evaluate a run from its checkpoint: `python scripts/evaluate.py RUN_DIR [--step N | --best] [--json]`."""

import sys

from zoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
