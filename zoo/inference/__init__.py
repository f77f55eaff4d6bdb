"""Using a trained run: evaluate it on its data, load it for prediction, predict from files.
Nothing here imports the training loop: a run directory is read through `zoo.rundir`,
`zoo.training.restore` and `zoo.training.setup` alone."""
