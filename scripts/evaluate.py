#!/usr/bin/env python
"""Evaluate a run from its checkpoint: `python scripts/evaluate.py RUN_DIR [--step N | --best] [--json]`."""

import sys

from zoo.cli import run

if __name__ == "__main__":
    sys.argv[1:1] = ["eval"]
    run()
