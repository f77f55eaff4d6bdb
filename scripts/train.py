#!/usr/bin/env python
"""Train a config: `python scripts/train.py configs/digits/cnn.yaml [--set k=v] [--workdir DIR]`."""

import sys

from zoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
