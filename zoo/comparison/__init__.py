"""Comparisons: a compare config's schema, what a step costs (FLOPs, measured time), the runner
(every model x seed under one budget, sweeps selected on validation) and the report."""
