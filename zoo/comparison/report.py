"""A compare's report directory: report.md, results.csv, results.json, curves.png, tradeoff.png.

Input is plain data (one dict per run, as `zoo.compare` builds them, plus the compare's metadata);
the curves come from each run's metrics.jsonl. Plots use matplotlib's Agg canvas directly (no
pyplot, no global backend switch). The metric columns are the task's (`meta["task"]`, zoo.tasks:
test accuracy for classify, R² and RMSE for regress, bpc for lm), each with its 95% CI and paired
tests; the first ranks the models.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import numpy as np

from zoo import tasks
from zoo.metrics import read_jsonl
from zoo.util import atomic_write, clock, printable

# One row per run in results.csv / results.json, in this order.
COLUMNS = (
    "compare", "dataset", "config", "model", "family", "seed", "params", "flops_per_example", "batch_size",
    "steps", "compile_seconds", "ms_per_step", "examples_per_sec", "train_seconds", "wall_seconds", "final_accuracy",
    "final_loss", "final_val_accuracy", "best_accuracy", "final_step", "resumed_from", "run_dir",
    "label", "setting", "flops_per_step", "train_flops",
)
# One row per model in report.md.
TABLE_HEADER = (
    "model", "family", "params", "FLOPs/example", "steps", "train FLOPs", "compile (s)", "ms/step", "examples/s",
    "train time (s)", "final test acc", "95% CI", "vs best (paired t)", "test acc at best val",
)
FILES = ("report.md", "results.csv", "results.json", "curves.png", "tradeoff.png", "flops.png")
ALPHA = 0.05  # a model is distinguishable from the best when its paired t-test gives p < ALPHA
# The per-metric entries of COLUMNS and TABLE_HEADER, written for classify's accuracy
PER_METRIC_COLUMNS = ("final_accuracy", "final_val_accuracy", "best_accuracy")
PER_METRIC_HEADER = TABLE_HEADER[-4:]


def task_of(meta_or_name=None) -> type[tasks.Task]:
    """The task class of a compare's metadata (or a task name); a report without one is a classification's."""
    return tasks.describe(meta_or_name.get("task") if isinstance(meta_or_name, dict) else meta_or_name)


def columns(task=None) -> tuple:
    """COLUMNS for a task: each per-metric column once per report metric (classify: COLUMNS itself)."""
    metrics = [m.name for m in task_of(task).report]
    out = []
    for column in COLUMNS:
        out += ([column.replace("accuracy", metric) for metric in metrics] if column in PER_METRIC_COLUMNS
                else [column])
    return tuple(out)


def _suffix(task, metric: str) -> str:
    """'' for the task's first report metric (the keys of classify's reports), else '_<metric>'."""
    return "" if metric == task.main().name else f"_{metric}"


# ---------------------------------------------------------------------------------------------------
# Statistics over seeds


def t_quantile(df: int, level: float = 0.95) -> float:
    """The two-sided `level` quantile of Student's t with `df` degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, df))


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, sample std, half-width of the t confidence interval of the mean); nan where undefined."""
    values = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if values.size == 0:
        return math.nan, math.nan, math.nan
    if values.size == 1:
        return float(values[0]), 0.0, math.nan
    std = float(values.std(ddof=1))
    return float(values.mean()), std, t_quantile(values.size - 1, level) * std / math.sqrt(values.size)


def paired_t_test(a, b) -> float:
    """Two-sided p-value of the paired t-test of equal means (a[i] and b[i] share seed i); nan for < 2 pairs.

    Identical differences (zero spread) give p = 1 when they are all 0, else 0."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if diff.size < 2:
        return math.nan
    spread = diff.std(ddof=1)
    if spread == 0:
        return 1.0 if diff.mean() == 0 else 0.0
    from scipy import stats

    t = diff.mean() / (spread / math.sqrt(diff.size))
    return float(2 * stats.t.sf(abs(t), diff.size - 1))


def _mean_std(values) -> tuple[float, float]:
    mean, std, _ = mean_ci(values)
    return mean, std


def label_for(config_name: str, dataset: str) -> str:
    """'mnist1d_cnn' -> 'cnn' when every name carries the dataset prefix."""
    prefix = f"{dataset}_"
    return config_name[len(prefix):] if config_name.startswith(prefix) and len(config_name) > len(prefix) else config_name


def _label(row: dict) -> str:
    return row.get("label") or label_for(row["config"], row["dataset"])


def summarize(rows: list[dict], task=None) -> list[dict]:
    """One entry per (dataset, model config): mean, sample std and 95% CI over seeds of each metric of the
    task's report, and paired t-tests against the dataset's best model; sorted by dataset (first seen
    first), then by the task's first metric (accuracy for classify), best first."""
    task = task_of(task)
    metrics, main = [m.name for m in task.report], task.main()
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["config"]), []).append(row)
    datasets = list(dict.fromkeys(row["dataset"] for row in rows))
    models = []
    for (dataset, name), runs in groups.items():
        steps = sorted({r["steps"] for r in runs})
        entry = {"dataset": dataset, "config": name, "label": _label(runs[0]), "model": runs[0]["model"],
                 "family": runs[0]["family"], "seeds": len(runs), "seed_list": [r["seed"] for r in runs],
                 "params": runs[0]["params"], "flops_per_example": runs[0]["flops_per_example"],
                 "flops_per_step": runs[0].get("flops_per_step"), "steps": steps[0] if len(steps) == 1 else steps,
                 "batch_size": runs[0]["batch_size"], "setting": runs[0].get("setting") or ""}
        keys = [f"{kind}_{metric}" for kind in ("final", "best") for metric in metrics]
        for key in ("compile_seconds", "ms_per_step", "examples_per_sec", "train_seconds", "wall_seconds",
                    *keys, "final_loss", *(f"final_val_{metric}" for metric in metrics), "train_flops"):
            entry[key], entry[key + "_std"] = _mean_std(r.get(key) for r in runs)
        for metric in metrics:
            entry[f"final_{metric}_ci"] = mean_ci(r[f"final_{metric}"] for r in runs)[2]
        models.append(entry)
    sign = -1.0 if main.mode == "max" else 1.0
    ordered = []
    for dataset in datasets:
        group = sorted((m for m in models if m["dataset"] == dataset),
                       key=lambda m: (sign * m[f"final_{main.name}"], m["config"]))
        for metric in metrics:
            _compare_with_best(group, groups, metric, _suffix(task, metric))
        ordered += group
    return ordered


def _compare_with_best(group: list[dict], runs_by_model: dict, metric: str = "accuracy", suffix: str = "") -> None:
    """Sets each entry's p-value of `metric` against the best model's (paired by seed) and whether it is
    distinguishable (keys p_vs_best<suffix>, vs_best<suffix>)."""
    if not group:
        return
    best, key = group[0], f"final_{metric}"
    best_by_seed = {r["seed"]: r[key] for r in runs_by_model[(best["dataset"], best["config"])]}
    best[f"p_vs_best{suffix}"], best[f"vs_best{suffix}"] = None, "best"
    for entry in group[1:]:
        mine = {r["seed"]: r[key] for r in runs_by_model[(entry["dataset"], entry["config"])]}
        seeds = sorted(set(mine) & set(best_by_seed))
        p = paired_t_test([best_by_seed[s] for s in seeds], [mine[s] for s in seeds])
        entry[f"p_vs_best{suffix}"] = None if math.isnan(p) else p
        if not suffix:
            entry["paired_seeds"] = len(seeds)
        entry[f"vs_best{suffix}"] = "n/a" if math.isnan(p) else ("same" if p >= ALPHA else "worse")


def _si(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {suffix}"
    return f"{value:.3g}"


def _pm(mean: float, std: float, seeds: int) -> str:
    return f"{mean:.4f} ± {std:.4f}" if seeds > 1 else f"{mean:.4f}"


def _ci(mean: float, half: float) -> str:
    return "-" if not math.isfinite(half) else f"[{mean - half:.4f}, {mean + half:.4f}]"


def _p(p) -> str:
    if p is None:
        return "-"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _vs_best(m: dict, suffix: str = "") -> str:
    if m.get(f"vs_best{suffix}") == "best":
        return "best"
    if m.get(f"vs_best{suffix}") == "n/a":
        return "- (one seed)"
    mark = "not distinguishable" if m[f"vs_best{suffix}"] == "same" else "worse"
    return f"{mark}, {_p(m[f'p_vs_best{suffix}'])}"


def _steps(m: dict) -> str:
    steps = m["steps"]
    return f"{steps:,}" if isinstance(steps, int) else "/".join(f"{s:,}" for s in steps)


def markdown_table(models: list[dict], dataset: str, reference: dict | None = None, task=None) -> str:
    """One row per model of one dataset (`models` as `summarize` returns them): per metric of the task's
    report (classify: accuracy) its final test value, 95% CI, paired test against the best and the test
    value at the validation-best step."""
    task = task_of(task)
    header = list(TABLE_HEADER[:-4]) + [cell.replace("acc", m.title) if "acc" in cell else cell
                                        for m in task.report for cell in PER_METRIC_HEADER]
    accuracy_ref = (reference or {}).get("accuracy") or {}
    if accuracy_ref:
        header.append("published")
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|"]
    for m in models:
        cells = [m.get("label") or label_for(m["config"], dataset), m["family"], f"{m['params']:,}",
                 _si(m["flops_per_example"]), _steps(m), _si(m.get("train_flops")),
                 f"{m['compile_seconds']:.1f}", f"{m['ms_per_step']:.2f}", f"{m['examples_per_sec']:,.0f}",
                 f"{m['train_seconds']:.1f}"]
        for name in (metric.name for metric in task.report):
            final, best = f"final_{name}", f"best_{name}"
            cells += [_pm(m[final], m[final + "_std"], m["seeds"]), _ci(m[final], m.get(final + "_ci", math.nan)),
                      _vs_best(m, _suffix(task, name)), _pm(m[best], m[best + "_std"], m["seeds"])]
        if accuracy_ref:
            published = accuracy_ref.get(m["config"])
            cells.append(f"{published:.2f}" if published is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def dataset_table(models: list[dict], datasets: list[str], task=None) -> str:
    """Model x dataset: the task's first metric (final test accuracy for classify), mean [95% CI] over
    seeds; the best of each dataset in bold."""
    key = f"final_{task_of(task).main().name}"
    labels = list(dict.fromkeys(m["label"] for m in models))
    cell = {(m["label"], m["dataset"]): m for m in models}
    lines = ["| model | " + " | ".join(datasets) + " |", "|---|" + "---:|" * len(datasets)]
    for label in labels:
        cells = []
        for dataset in datasets:
            m = cell.get((label, dataset))
            if m is None:
                cells.append("-")
                continue
            text = f"{m[key]:.3f}"
            if math.isfinite(m.get(key + "_ci", math.nan)):
                text = f"{m[key]:.3f} [{m[key] - m[key + '_ci']:.3f}, {m[key] + m[key + '_ci']:.3f}]"
            if m.get("vs_best") == "best":
                text = f"**{text}**"
            elif m.get("vs_best") == "same":
                text += " ≈"
            cells.append(text)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _significance(models: list[dict], dataset: str) -> str:
    if len(models) < 2:
        return ""
    best = models[0]
    same = [m for m in models[1:] if m.get("vs_best") == "same"]
    worse = [m for m in models[1:] if m.get("vs_best") == "worse"]
    name = lambda m: f"{m['label']} ({_p(m['p_vs_best'])})"  # noqa: E731
    parts = [f"Best: **{best['label']}**."]
    if same:
        parts.append(f"Not distinguishable from it (paired t-test over seeds, p ≥ {ALPHA}): "
                     f"{', '.join(map(name, same))}.")
    if worse:
        parts.append(f"Worse than it (p < {ALPHA}): {', '.join(map(name, worse))}.")
    if any(m.get("vs_best") == "n/a" for m in models[1:]):
        parts.append("With one seed no test is possible.")
    return " ".join(parts)


def _budget_line(models: list[dict], meta: dict) -> str:
    kind = meta.get("budget_kind", "steps")
    line = f"Budget: {meta.get('budget', '-')} per run, the same for every model"
    if kind == "seconds":
        reached = ", ".join(f"{m['label']} {_steps(m)} steps ({m['train_seconds']:.1f} s measured)" for m in models)
        line += ("; steps = seconds / the step time measured in a short calibration (excluding compile), "
                 f"so the steps differ by model: {reached}")
    elif kind == "flops":
        line += ("; steps = FLOPs / XLA's count for one compiled train step: "
                 + ", ".join(f"{m['label']} {_steps(m)} steps ({_si(m.get('flops_per_step'))} FLOPs/step)"
                             for m in models))
    return line + "."


def _sweep_section(sweeps: list[dict], trials: list[dict], dataset: str, task=None) -> list[str]:
    mine = [s for s in sweeps if s["dataset"] == dataset]
    if not mine:
        return []
    lines = ["### Sweep trials", "",
             "Every setting was trained on the tuning seed(s) and ranked by the validation metric alone; the "
             "chosen one (**bold**, ←) was then trained on every seed and is what the table reports on test.",
             ""]
    for sweep in mine:
        chosen = sweep.get("chosen")
        grid = {k: v for k, v in sweep["grid"].items() if k not in ("random", "select")}
        sampled = f", {sweep['grid']['random']} sampled" if sweep["grid"].get("random") else ""
        lines.append(f"- **{sweep['label']}**: {sweep['settings']} settings{sampled} of "
                     + ", ".join(f"{k} {v}" for k, v in grid.items())
                     + f"; tuned on seed(s) {', '.join(map(str, sweep['tuning_seeds']))} by {sweep['metric']}; "
                     + (f"chose {_setting_text(chosen)}" if chosen else "no trial finished")
                     + "".join(f". **{flag}**" for flag in sweep.get("flags", [])) + ".")
    main = task_of(task).main()
    lines += ["", f"| model | setting | val {main.words} | val loss | chosen |", "|---|---|---:|---:|:---:|"]
    for sweep in mine:
        by_setting: dict[str, list[dict]] = {}
        for trial in trials:
            if trial["dataset"] == dataset and trial["config"] == sweep["config"]:
                by_setting.setdefault(trial["tag"], []).append(trial)
        for group in by_setting.values():
            acc = _mean_std(t.get(f"val_{main.name}") for t in group)[0]
            loss = _mean_std(t["val_loss"] for t in group)[0]
            chosen = group[0]["chosen"]
            setting = _setting_text(group[0]["setting"])
            row = [sweep["label"], f"**{setting}**" if chosen else setting, f"{acc:.4f}", f"{loss:.4f}",
                   "←" if chosen else ""]
            lines.append("| " + " | ".join(row) + " |")
    return lines + [""]


def _setting_text(setting: dict) -> str:
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={v:g}" if isinstance(v, float) else f"{k.rsplit('.', 1)[-1]}={v}"
                     for k, v in setting.items())


def _figure_names(dataset: str, multi: bool) -> dict:
    prefix = f"{dataset}_" if multi else ""
    return {kind: f"{prefix}{kind}.png" for kind in ("curves", "tradeoff", "flops")}


def _dataset_section(models: list[dict], rows: list[dict], meta: dict, dataset: str, trials: list[dict],
                     multi: bool) -> list[str]:
    lines = [f"## {dataset}", ""] if multi else []
    main = task_of(meta).main().words  # accuracy for classify
    table = markdown_table(models, dataset, meta.get("reference") if not multi or any(
        m["config"] in ((meta.get("reference") or {}).get("accuracy") or {}) for m in models) else None,
        meta.get("task"))
    if multi or meta.get("budget_kind") in ("seconds", "flops"):
        lines += [f"- {_budget_line(models, meta)}", ""]
    lines += [table, ""]
    baseline = baseline_line(meta, dataset)
    if baseline:
        lines += [baseline, ""]
    significance = _significance(models, dataset)
    if significance:
        lines += [significance, ""]
    settings = [m for m in models if m.get("setting")]
    if settings:
        lines += ["Tuned settings: " + "; ".join(f"{m['label']}: {_setting_text(json.loads(m['setting']))}"
                                                 for m in settings) + ".", ""]
    names = _figure_names(dataset, multi)
    lines += [f"![validation and test {main}, train loss]({names['curves']})", "",
              f"![{main} against size and time]({names['tradeoff']})", "",
              f"![{main} against training FLOPs]({names['flops']})", ""]
    lines += _samples_section(meta.get("samples") or {}, dataset)
    lines += _sweep_section(meta.get("sweeps") or [], trials, dataset, meta.get("task"))
    return lines


def _fenced(text: str) -> list[str]:
    """`text` as a fenced block whose fence is longer than any run of backticks in it (a sample may
    contain ```), so that no generated text can end the block or be read as markdown."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, text, fence]


def _samples_section(samples: dict, dataset: str) -> list[str]:
    """A language-model compare's sampled text (`runner.samples`): per model, the prompt followed by
    each continuation, and the `zoo sample` command that prints it again."""
    models = [m for m in samples.get("models") or [] if m["dataset"] == dataset]
    if not models:
        return []
    spec = samples["settings"]
    options = "".join(f" --{key.replace('_', '-')} {spec[key]}" for key in ("top_k", "top_p") if spec.get(key) is not None)
    seeds = ", ".join(str(spec["seed"] + i) for i in range(spec["count"]))
    lines = ["### Samples", "",
             f"{spec['count']} continuation(s) of the prompt per model (each block below starts with it), from its "
             f"first seed's run (final checkpoint), sampling seed S = {seeds}; each is what",
             ""] + _fenced(printable(f"zoo sample RUN_DIR --prompt {json.dumps(spec['prompt'])} --max-tokens "
                                 f"{spec['max_tokens']} --temperature {spec['temperature']}{options} --seed S")) + [
             "", "prints (the prompt, then the continuation; control characters escaped as `zoo sample` escapes them); "
             "RUN_DIR below, in the compare's workdir.", ""]
    for m in models:
        lines += [f"**{m['label']}** (`{m['run_dir']}`):", ""]
        if m.get("error"):
            lines += [f"not sampled: {m['error']}", ""]
            continue
        for i, text in enumerate(m["texts"]):
            shown = "\n".join(printable(line) for line in (spec["prompt"] + text).split("\n"))  # as zoo sample
            lines += [f"seed {spec['seed'] + i}:", ""] + _fenced(shown) + [""]
    return lines


def baseline_line(meta: dict, dataset: str) -> str:
    """The line a regression report prints under its table: ordinary least squares on the same split
    (`runner.least_squares`, in meta["baselines"]); '' when there is none."""
    fit = (meta.get("baselines") or {}).get(dataset)
    if not fit:
        return ""
    return (f"Linear baseline: {fit['method']}, fit on the same {fit['train_rows']} training rows the models train "
            f"on (validation rows held out), scored on the same {fit['test_rows']} test rows: test R² "
            f"{fit['r2']:.4f}, RMSE {fit['rmse']:.4g}, MAE {fit['mae']:.4g}.")


def _markdown(models: list[dict], rows: list[dict], meta: dict, trials: list[dict]) -> str:
    seeds = meta.get("seeds") or sorted({r["seed"] for r in rows})
    datasets = meta.get("datasets") or list(dict.fromkeys(r["dataset"] for r in rows))
    datasets = [d for d in datasets if any(m["dataset"] == d for m in models)] or datasets
    multi = len(datasets) > 1
    name, dataset = meta.get("name", ""), meta.get("dataset", "")
    lines = [f"# Compare: {name}" + (f" (dataset {dataset})" if name != dataset else ""), ""]
    if meta.get("command"):
        lines += ["Produced by:", "", "```", meta["command"], "```", ""]
    lines += _setting_lines(rows, meta, trials, datasets, seeds)
    lines.append("")
    if multi:
        lines += [f"## Final test {task_of(meta).main().words}, model × dataset", "",
                  "Mean over seeds [95% t-interval]; **bold**: the dataset's best; ≈: not distinguishable from "
                  f"the best (paired t-test over seeds, p ≥ {ALPHA}).", "",
                  dataset_table(models, datasets, meta.get("task")), "", "![model x dataset](heatmap.png)", ""]
    lines += [columns_text(meta.get("task")), ""]
    reference = meta.get("reference") or {}
    if reference.get("accuracy"):
        lines += [f"Published: {reference.get('source', 'reference')}.", ""]
    resumed = [r for r in rows if r.get("resumed_from")]
    if resumed:
        lines += [f"{len(resumed)} run(s) were resumed from a checkpoint; their times cover the resumed part only.",
                  ""]
    for dataset in datasets:
        lines += _dataset_section([m for m in models if m["dataset"] == dataset],
                                  [r for r in rows if r["dataset"] == dataset], meta, dataset, trials, multi)
    lines += ["Per run: `results.csv`, `results.json` (sweep trials under `trials`); run directories under "
              "`runs/<model>/seed<k>/` (swept models: `runs/<model>/<setting>/seed<k>/`) in the compare's workdir.",
              ""]
    return "\n".join(lines)


COLUMNS_TEXT = (
    "Columns: test accuracy as mean ± sample standard deviation over seeds, and its 95% confidence "
    "interval (t distribution, n−1 degrees of freedom). *vs best*: a paired t-test (two-sided) of this "
    "model's per-seed test accuracy against the best model's on the same seeds (same data split and "
    f"order); p ≥ {ALPHA}: not distinguishable from the best. *final*: the last step's checkpoint (what "
    "`zoo eval RUN_DIR` restores); *at best val*: test accuracy of the checkpoint with the highest "
    "validation accuracy (selected on validation only, never on test). FLOPs/example: XLA cost analysis "
    "of the compiled inference forward pass (scans unrolled), divided by the batch size; train FLOPs: "
    "XLA's count for one compiled train step (forward, backward, update) times the steps. ms/step, "
    "examples/s and train time exclude compilation and evaluation, and are means over seeds.")


def columns_text(task=None) -> str:
    """COLUMNS_TEXT for the task's metrics (classify: COLUMNS_TEXT itself) and its selection metric."""
    task = task_of(task)
    if task is tasks.Classify:
        return COLUMNS_TEXT
    metrics = " and ".join(f"test {m.words}" for m in task.report)
    units = " (regression metrics in the targets' original units)" if task is tasks.Regress else ""
    chosen = f"{'highest' if task.selection[1] == 'max' else 'lowest'} validation {task.selection[0]}"
    each = ", each" if len(task.report) > 1 else ""
    text = COLUMNS_TEXT.replace("Columns: test accuracy as", f"Columns: {metrics}{units}{each} as")
    text = text.replace("per-seed test accuracy against the best model's",
                        f"per-seed value against the best model's (best by {task.main().words})")
    return text.replace("test accuracy of the checkpoint with the highest validation accuracy",
                        f"{metrics} of the checkpoint with the {chosen}")


def _setting_lines(rows: list[dict], meta: dict, trials: list[dict], datasets: list[str], seeds) -> list[str]:
    """The bullet list under the title: wall time, datasets and budget, machine, configs, what was skipped."""
    machine = meta.get("machine") or {}
    lines = []
    wall = meta.get("wall_seconds")
    trained, reused = meta.get("trained"), meta.get("reused")
    if wall is not None:
        detail = f" ({trained} runs trained, {reused} reused from earlier)" if reused else f" ({trained} runs)"
        lines.append(f"- Whole compare: **{clock(wall)}** wall time{detail}.")
    run_walls = [r.get("wall_seconds") for r in rows] + [t.get("wall_seconds") for t in trials
                                                         if not t.get("chosen")]
    known = [w for w in run_walls if w is not None]
    if reused and known:
        counted = f"{len(known)} runs" if len(known) == len(run_walls) else \
            f"{len(known)} of these {len(run_walls)} runs (the others' times were not recorded)"
        lines.append(f"- The fit() calls that produced {counted} took {clock(sum(known))} in all (compile, "
                     "training, evaluation and checkpoints), on the machine as loaded then.")
    lines += [f"- Dataset{'s' if len(datasets) > 1 else ''}: {', '.join(datasets)}. Budget: {meta.get('budget', '-')} "
              f"per run, the same for every model; seeds {', '.join(map(str, seeds))}.",
              f"- Machine: {machine.get('cpu_count', '?')} CPUs, {machine.get('backend', '?')} backend "
              f"({machine.get('devices', '?')} device(s), {machine.get('device_kind', '?')}), "
              f"jax {machine.get('jax', '?')}, {machine.get('platform', '?')}."]
    load = machine.get("load_average")
    if load:
        lines.append(f"- Load average when the compare ended: {load[0]:.1f} (1 min), {load[2]:.1f} (15 min) on "
                     f"{machine.get('cpu_count', '?')} CPUs; timings rise with other jobs on the machine.")
    if meta.get("models"):
        lines.append(f"- Model configs: {', '.join(f'`{path}`' for path in meta['models'])}.")
    members = [r for r in rows if r.get("population")]
    if members:
        sizes = sorted({r["population"] for r in members})
        lines.append(f"- {len(members)} of the {len(rows)} runs trained as members of vmapped populations (of "
                     f"{', '.join(map(str, sizes))} runs; docs/population.md): a member's compile (s), ms/step, "
                     "examples/s and train time are its population's divided by the population's size.")
    skipped = meta.get("skipped") or []
    if skipped:
        lines.append(f"- **Incomplete**: --budget-s {meta.get('budget_s'):g} ran out; {len(skipped)} runs were not "
                     "started (rerun the command to train them): "
                     + "; ".join(f"{s['config']}{' ' + _setting_text(s['setting']) if s['setting'] else ''} "
                                 f"seed {s['seed']} ({s['why']})" for s in skipped) + ".")
    return lines


def write_csv(path: Path, rows: list[dict], fields: tuple = COLUMNS) -> None:
    handle = io.StringIO(newline="")
    writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: ("" if row.get(key) is None else row.get(key)) for key in fields})
    atomic_write(path, handle.getvalue())


def write_report(report_dir: str | Path, rows: list[dict], meta: dict, runs_root: str | Path,
                 trials: list[dict] | None = None) -> dict:
    """Writes every report file; `runs_root` is where each row's `run_dir` (if relative) lives."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    trials, task, fields = trials or [], meta.get("task"), columns(meta.get("task"))
    models = summarize(rows, task)
    datasets = [d for d in (meta.get("datasets") or list(dict.fromkeys(r["dataset"] for r in rows)))
                if any(m["dataset"] == d for m in models)]
    multi = len(datasets) > 1
    tables = [markdown_table([m for m in models if m["dataset"] == d], d, meta.get("reference"), task)
              + "".join(f"\n\n{line}" for line in [baseline_line(meta, d)] if line) for d in datasets]
    table = dataset_table(models, datasets, task) if multi else (tables[0] if tables else "")
    atomic_write(report_dir / "report.md", _markdown(models, rows, meta, trials))
    write_csv(report_dir / "results.csv", rows, fields)
    atomic_write(report_dir / "results.json",
                  json.dumps({"compare": meta, "models": models,
                              "runs": [{key: row.get(key) for key in fields} for row in rows],
                              "trials": trials}, indent=2, default=_json_default) + "\n")
    files = [report_dir / name for name in ("report.md", "results.csv", "results.json")]
    labels = list(dict.fromkeys(m["label"] for m in models))
    colors = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    for dataset in datasets:
        names = _figure_names(dataset, multi)
        group = [m for m in models if m["dataset"] == dataset]
        group_rows = [r for r in rows if r["dataset"] == dataset]
        dataset_meta = {**meta, "dataset": dataset, "name": meta.get("name") if not multi else dataset}
        plot_curves(report_dir / names["curves"], group_rows, group, colors, Path(runs_root), dataset_meta)
        plot_tradeoff(report_dir / names["tradeoff"], group, colors, dataset_meta)
        plot_flops(report_dir / names["flops"], group, colors, dataset_meta)
        files += [report_dir / name for name in names.values()]
    if multi:
        plot_heatmap(report_dir / "heatmap.png", models, datasets, meta)
        files.append(report_dir / "heatmap.png")
    return {"table": table, "tables": tables, "models": models, "files": [str(f) for f in files]}


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _curves(run_dir: Path, metric: str = "accuracy") -> tuple[dict, dict, dict]:
    """{step: validation `metric`}, {step: test `metric`}, {step: train loss} from one run's metrics.jsonl."""
    path = run_dir / "metrics.jsonl"
    records = read_jsonl(path) if path.exists() else []
    val = {r["step"]: r[metric] for r in records if r.get("split") == "val" and metric in r}
    test = {r["step"]: r[metric] for r in records if r.get("split") == "test" and metric in r}
    train = {r["step"]: r["loss"] for r in records if r.get("split") == "train" and "loss" in r}
    return val, test, train


def _band(series: list[dict]):
    """Steps common to every seed; the mean, min and max across seeds at each."""
    steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
    if not steps:
        return None
    values = np.array([[s[step] for step in steps] for s in series], dtype=np.float64)
    return np.array(steps), values.mean(0), values.min(0), values.max(0)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _title(meta: dict) -> str:
    name, dataset = meta.get("name", ""), meta.get("dataset", "")
    where = dataset if name == dataset else f"{name} on {dataset}"
    return f"{where}: {meta.get('budget', '')} per run, {len(meta.get('seeds') or [])} seeds"


def plot_curves(path: Path, rows: list[dict], models: list[dict], colors: dict, runs_root: Path, meta: dict) -> None:
    """Validation and test values of the task's first metric (accuracy for classify) and train loss
    against step: per model the mean over seeds, min-max band shaded."""
    task = task_of(meta)
    main, words = task.main().name, task.main().words
    figure = _figure(15, 4.6)
    val_ax, test_ax, loss_ax = figure.subplots(1, 3)
    for model in models:
        runs = [r for r in rows if r["config"] == model["config"]]
        vals, tests, trains = zip(*(_curves(_run_path(r["run_dir"], runs_root), main) for r in runs))
        color = colors[model["label"]]
        label = f"{model['label']} ({model[f'final_{main}']:.3f})"
        for ax, series in ((val_ax, vals), (test_ax, tests), (loss_ax, trains)):
            band = _band([s for s in series if s])
            if band is None:
                continue
            steps, mean, low, high = band
            ax.plot(steps, mean, color=color, label=label, lw=1.6, marker="o" if len(steps) < 15 else None, ms=3)
            if len(series) > 1:
                ax.fill_between(steps, low, high, color=color, alpha=0.2, lw=0)
    published = (meta.get("reference") or {}).get("accuracy") or {}
    for model in models:
        if model["config"] in published:
            test_ax.axhline(published[model["config"]], color=colors[model["label"]], ls="--", lw=1, alpha=0.8)
    selected = " (selection reads this)" if task.selection[0] == main else ""
    val_ax.set(xlabel="step", ylabel=f"validation {words}", title=f"validation {words}{selected}")
    test_ax.set(xlabel="step", ylabel=f"test {words}",
                title=f"test {words} (mean, min-max over seeds)" + ("; dashed: published" if published else ""))
    loss_ax.set(xlabel="step", ylabel="train loss", title="train loss (mean, min-max over seeds)", yscale="log")
    for ax in (val_ax, test_ax, loss_ax):
        ax.grid(True, alpha=0.3)
    if test_ax.get_legend_handles_labels()[0]:
        test_ax.legend(loc="lower right", fontsize=8)
    figure.suptitle(_title(meta))
    figure.savefig(path)


def _si_formatter(minor: bool = False):
    """Log-axis tick labels as plain numbers (30k, 0.5, 20) instead of 3x10^4; minor ticks at 2 and 5."""
    from matplotlib.ticker import FuncFormatter

    def label(value, _position):
        if value <= 0:
            return ""
        if minor and round(value / 10 ** math.floor(math.log10(value)), 6) not in (2.0, 5.0):
            return ""
        return _si(value).replace(" ", "")

    return FuncFormatter(label)


def _run_path(run_dir: str, runs_root: Path) -> Path:
    path = Path(run_dir)
    return path if path.is_absolute() else runs_root / path


def _error_y(model: dict, main: str = "accuracy") -> float:
    half = model.get(f"final_{main}_ci", math.nan)
    return half if math.isfinite(half) else 0.0


def plot_tradeoff(path: Path, models: list[dict], colors: dict, meta: dict) -> None:
    """The task's first final test metric (accuracy for classify) against parameters and against
    training time (log x), error bars = 95% CI."""
    main, words = task_of(meta).main().name, task_of(meta).main().words
    figure = _figure(12, 4.6)
    params_ax, time_ax = figure.subplots(1, 2)
    for model in models:
        color, label = colors[model["label"]], model["label"]
        y, yerr = model[f"final_{main}"], _error_y(model, main)
        params_ax.errorbar(model["params"], y, yerr=yerr, fmt="o", color=color, capsize=3)
        time_ax.errorbar(model["train_seconds"], y, yerr=yerr, xerr=model["train_seconds_std"], fmt="o",
                         color=color, capsize=3)
        for ax, x in ((params_ax, model["params"]), (time_ax, model["train_seconds"])):
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    params_ax.set(xscale="log", xlabel="parameters", ylabel=f"final test {words} (95% CI)",
                  title=f"{words} vs parameters")
    time_ax.set(xscale="log", xlabel="training time (s, excluding compile)", ylabel=f"final test {words} (95% CI)",
                title=f"{words} vs training time")
    for ax in (params_ax, time_ax):
        _log_axis(ax)
    figure.suptitle(_title(meta))
    figure.savefig(path)


def _log_axis(ax) -> None:
    ax.grid(True, which="both", alpha=0.3)
    ax.xaxis.set_major_formatter(_si_formatter())
    ax.xaxis.set_minor_formatter(_si_formatter(minor=True))
    ax.margins(x=0.15, y=0.1)


def plot_flops(path: Path, models: list[dict], colors: dict, meta: dict) -> None:
    """The task's first final test metric (accuracy for classify) against training FLOPs (XLA's
    train-step count times steps; log x)."""
    main, words = task_of(meta).main().name, task_of(meta).main().words
    figure = _figure(6.5, 4.6)
    ax = figure.subplots()
    for model in models:
        x = model.get("train_flops")
        if x is None or not math.isfinite(x) or x <= 0:
            continue
        color = colors[model["label"]]
        ax.errorbar(x, model[f"final_{main}"], yerr=_error_y(model, main), fmt="o", color=color, capsize=3)
        ax.annotate(model["label"], (x, model[f"final_{main}"]), textcoords="offset points", xytext=(6, 4),
                    fontsize=8)
    ax.set(xscale="log", xlabel="training FLOPs (XLA count per train step x steps)",
           ylabel=f"final test {words} (95% CI)", title=f"{words} vs training compute")
    _log_axis(ax)
    figure.suptitle(_title(meta), fontsize=10)
    figure.savefig(path)


def plot_heatmap(path: Path, models: list[dict], datasets: list[str], meta: dict) -> None:
    """Model x dataset: the task's first final test metric (accuracy for classify; mean over seeds),
    numbers in the cells."""
    main, words = task_of(meta).main().name, task_of(meta).main().words
    labels = list(dict.fromkeys(m["label"] for m in models))
    cell = {(m["label"], m["dataset"]): m[f"final_{main}"] for m in models}
    values = np.array([[cell.get((label, d), np.nan) for d in datasets] for label in labels])
    figure = _figure(1.6 + 1.5 * len(datasets), 1.2 + 0.45 * len(labels))
    ax = figure.subplots()
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=np.nanmin(values), vmax=np.nanmax(values),
                      aspect="auto")
    ax.set_xticks(range(len(datasets)), datasets, rotation=20, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    middle = (np.nanmin(values) + np.nanmax(values)) / 2
    for i in range(len(labels)):
        for j in range(len(datasets)):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.3f}", ha="center", va="center", fontsize=8,
                        color="black" if values[i, j] > middle else "white")
    figure.colorbar(image, ax=ax, label=f"final test {words}")
    figure.suptitle(f"{meta.get('name', '')}: {meta.get('budget', '')} per run, "
                    f"mean over {len(meta.get('seeds') or [])} seeds", fontsize=10)
    figure.savefig(path)
