#!/usr/bin/env python
"""Train a config: `python scripts/train.py configs/digits/cnn.yaml [--set k=v] [--workdir DIR]`."""

import sys

from zoo.cli import run

if __name__ == "__main__":
    sys.argv[1:1] = ["train"]
    run()
