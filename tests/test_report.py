"""The compare report's pieces: learning curves, the budget line, number formatting, the sweep
section. Each test names the mutant it kills in its docstring (found by tools/mutation.py)."""

from __future__ import annotations

import json

from zoo.comparison import report


def test_the_learning_curves_read_train_loss_and_val_and_test_accuracy_by_step(tmp_path):
    """zoo.comparison.report.x__curves__mutmut_53 (the train-loss curve kept only records without a loss: empty)."""
    records = [{"split": "train", "step": 5, "loss": 2.0}, {"split": "train", "step": 10, "loss": 1.5},
               {"split": "train", "step": 10, "learning_rate": 0.1},
               {"split": "val", "step": 10, "accuracy": 0.7, "loss": 0.9}, {"split": "test", "step": 10, "accuracy": 0.6}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert report._curves(tmp_path) == ({10: 0.7}, {10: 0.6}, {5: 2.0, 10: 1.5})


def test_a_flops_budget_line_says_how_the_steps_follow_from_each_models_flops():
    """zoo.comparison.report.x__budget_line__mutmut_41 (the explanation of the steps was garbled)."""
    models_ = [{"label": "MLP", "steps": 1000, "flops_per_step": 2e6}, {"label": "CNN", "steps": 40, "flops_per_step": 5e7}]
    line = report._budget_line(models_, {"budget_kind": "flops", "budget": "2e9 FLOPs"})
    assert line.startswith("Budget: 2e9 FLOPs per run, the same for every model; steps = FLOPs / XLA's count for "
                           "one compiled train step: MLP 1,000 steps (") and "CNN 40 steps (" in line


def test_numbers_in_reports_read_with_si_prefixes_and_missing_ones_as_a_dash():
    """zoo.comparison.report.x__si__mutmut_6 (a missing number printed as 'XX-XX')."""
    assert [report._si(v) for v in (None, float("nan"), 0.5, 2500, 3.2e6, 4e9, 1.5e12)] == [
        "-", "-", "0.5", "2.5 k", "3.2 M", "4 G", "1.5 T"]


def test_the_summary_of_a_sweep_choice_keeps_its_setting():
    """zoo.comparison.report.x_summarize__mutmut_80 (the chosen setting of a tuned model was dropped from its row)."""
    base = {key: 1.0 for key in report.COLUMNS} | {"config": "a", "model": "mlp", "family": "dnn",
                                                   "setting": "lr=0.01"}
    (row,) = report.summarize([base | {"seed": 0}, base | {"seed": 1}])
    assert row["setting"] == "lr=0.01"


def test_the_sweep_section_lists_each_setting_with_its_mean_validation_scores_and_marks_the_choice():
    """zoo.comparison.report.x__sweep_section__mutmut_83 (the table's separator row was garbled: no markdown table)."""
    sweep = {"dataset": "digits", "config": "cnn", "label": "CNN", "settings": 2, "metric": "val_accuracy",
             "grid": {"optimizer.learning_rate": [0.01, 0.1]}, "tuning_seeds": [0],
             "chosen": {"optimizer.learning_rate": 0.1}}
    trial = {"dataset": "digits", "config": "cnn"}
    trials = [trial | {"tag": "a", "setting": {"optimizer.learning_rate": 0.01}, "chosen": False,
                       "val_accuracy": 0.5, "val_loss": 1.5},
              trial | {"tag": "b", "setting": {"optimizer.learning_rate": 0.1}, "chosen": True,
                       "val_accuracy": 0.9, "val_loss": 0.3},
              trial | {"tag": "b", "setting": {"optimizer.learning_rate": 0.1}, "chosen": True,
                       "val_accuracy": 0.8, "val_loss": 0.5}]
    lines = report._sweep_section([sweep], trials, "digits")
    table = lines[lines.index("| model | setting | val accuracy | val loss | chosen |"):]
    assert table[:4] == ["| model | setting | val accuracy | val loss | chosen |", "|---|---|---:|---:|:---:|",
                         "| CNN | learning_rate=0.01 | 0.5000 | 1.5000 |  |",
                         "| CNN | **learning_rate=0.1** | 0.8500 | 0.4000 | ← |"]
    assert "- **CNN**: 2 settings of optimizer.learning_rate [0.01, 0.1]; tuned on seed(s) 0 by val_accuracy; " \
           "chose learning_rate=0.1." in lines


def test_the_heatmap_is_taller_the_more_models_it_shows(tmp_path):
    """zoo.comparison.report.x_plot_heatmap__mutmut_21 (the height was left to matplotlib's default: 4.8 inches
    whatever the number of models)."""
    from PIL import Image

    models = [{"label": label, "dataset": dataset, "final_accuracy": 0.5 + 0.1 * i}
              for i, label in enumerate(("MLP", "CNN", "ViT")) for dataset in ("digits", "mnist1d")]
    report.plot_heatmap(tmp_path / "heatmap.png", models, ["digits", "mnist1d"], {"name": "c", "seeds": [0]})
    width, height = Image.open(tmp_path / "heatmap.png").size
    assert (width, height) == (round((1.6 + 1.5 * 2) * 110), round((1.2 + 0.45 * 3) * 110))


def test_the_tradeoff_figure_labels_its_training_time_axis(tmp_path, monkeypatch):
    """zoo.comparison.report.x_plot_tradeoff__mutmut_103 (the time axis lost its label)."""
    figures = []
    make = report._figure
    monkeypatch.setattr(report, "_figure", lambda *size: figures.append(make(*size)) or figures[-1])
    model = {"label": "MLP", "final_accuracy": 0.9, "final_accuracy_ci": 0.01, "params": 1000,
             "train_seconds": 2.0, "train_seconds_std": 0.1}
    report.plot_tradeoff(tmp_path / "tradeoff.png", [model], {"MLP": "C0"}, {"name": "c", "dataset": "digits"})
    params_ax, time_ax = figures[0].axes
    assert (params_ax.get_xlabel(), time_ax.get_xlabel()) == ("parameters", "training time (s, excluding compile)")
    assert time_ax.get_ylabel() == "final test accuracy (95% CI)"


def test_sampled_text_and_a_hostile_prompt_stay_inside_their_fenced_blocks():
    """A language-model compare's samples come from a model and its prompt from a config file (both
    untrusted): backtick runs in either cannot close their block, and nothing of them (a markdown image
    fetching a remote address, a terminal escape) reaches the report outside a fenced block."""
    import re

    from zoo.comparison import report

    prompt = "```\n![x](http://example.invalid/t.png) \x1b[31m"
    samples = {"settings": {"prompt": prompt, "max_tokens": 8, "temperature": 1.0, "top_k": None, "top_p": None,
                            "seed": 0, "count": 2},
               "models": [{"dataset": "pydoc", "label": "lm", "run_dir": "runs/lm/seed0",
                           "texts": ["a````b\n```", "plain"]}]}
    text = "\n".join(report._samples_section(samples, "pydoc"))
    blocks = list(re.finditer(r"^(`{3,})\n(.*?)\n\1$", text, flags=re.M | re.S))
    assert len(blocks) == 3  # the command, then one per sample
    outside = re.sub(r"^(`{3,})\n.*?\n\1$", "", text, flags=re.M | re.S)
    assert "![" not in outside and "example.invalid" not in outside and "\x1b" not in text
    assert blocks[1].group(2).startswith("```\n![x]") and blocks[1].group(2).endswith("a````b\n```")
    assert blocks[2].group(2).endswith("plain")

