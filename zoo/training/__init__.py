"""Training: the train state, jitted steps, optimizers and the `fit` loop."""

from zoo.training.loop import Run, build_run, fit
from zoo.training.state import TrainState

__all__ = ["Run", "TrainState", "build_run", "fit"]
