"""Progress a batch log can read: off a terminal, one plain line per log step or 30 seconds; on a
terminal, a bar whose rate and ETA are the loop's (compile time excluded)."""

import io
import re

from zoo.metrics import Progress
from zoo.training import fit

LINE = re.compile(r"^step (\d+)/(\d+)  loss \d+\.\d{4}  [\d,]+ examples/s  ETA \d+:\d\d:\d\d$")


def test_off_a_terminal_one_plain_line_per_log_step_with_loss_rate_and_eta(tmp_path, tiny_config):
    stream = io.StringIO()
    fit(tiny_config({"train": {"steps": 20, "log_every": 5}}), tmp_path, Progress(stream, interactive=False))
    lines = [line for line in stream.getvalue().splitlines() if LINE.match(line)]
    assert [LINE.match(line).groups() for line in lines] == [(str(s), "20") for s in (5, 10, 15, 20)]


class Clock:
    """A clock that advances 31 s each time it is read: every check finds a line due."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 31.0
        return self.now


def test_off_a_terminal_a_line_comes_every_30_seconds_between_log_steps(tmp_path, tiny_config):
    stream = io.StringIO()
    config = tiny_config({"train": {"steps": 20, "log_every": 10, "steps_per_call": 1}})
    fit(config, tmp_path, Progress(stream, interactive=False, clock=Clock()))
    steps = [int(LINE.match(line).group(1)) for line in stream.getvalue().splitlines() if LINE.match(line)]
    assert steps == list(range(1, 21))  # every step is 31 s after the last line, so every step prints


def test_no_line_between_log_steps_before_30_seconds():
    progress = Progress(io.StringIO(), interactive=False, clock=lambda: 29.0)
    progress.start(100)
    assert not progress.due()


def test_on_a_terminal_the_bar_shows_the_loops_rate_and_eta_not_tqdms():
    stream = io.StringIO()
    progress = Progress(stream, interactive=True)
    progress.start(100)
    progress.update(50, {"loss": 0.5}, examples_per_sec=1234.0, eta_seconds=75.0)
    progress.close()
    text = stream.getvalue()
    assert "1,234 examples/s" in text and "ETA 0:01:15" in text
    assert "it/s" not in text and "<" not in text  # tqdm's own rate and remaining time (compile included)
