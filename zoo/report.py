"""A compare's report directory: report.md, results.csv, results.json, curves.png, tradeoff.png.

Input is plain data (one dict per run, as `zoo.compare` builds them, plus the compare's metadata);
the curves come from each run's metrics.jsonl. Plots use matplotlib's Agg canvas directly (no
pyplot, no global backend switch).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from zoo.metrics import read_jsonl
from zoo.util import atomic_write, clock

# One row per run in results.csv / results.json, in this order.
COLUMNS = (
    "compare", "dataset", "config", "model", "family", "seed", "params", "flops_per_example", "batch_size",
    "steps", "compile_seconds", "ms_per_step", "examples_per_sec", "train_seconds", "wall_seconds", "final_accuracy",
    "final_loss", "final_val_accuracy", "best_accuracy", "final_step", "resumed_from", "run_dir",
)
# One row per model in report.md.
TABLE_HEADER = (
    "model", "family", "params", "FLOPs/example", "compile (s)", "ms/step", "examples/s", "train time (s)",
    "final test acc", "test acc at best val",
)
FILES = ("report.md", "results.csv", "results.json", "curves.png", "tradeoff.png")


def _mean_std(values) -> tuple[float, float]:
    values = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if values.size == 0:
        return math.nan, math.nan
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return float(values.mean()), std


def label_for(config_name: str, dataset: str) -> str:
    """'mnist1d_cnn' -> 'cnn' when every name carries the dataset prefix."""
    prefix = f"{dataset}_"
    return config_name[len(prefix):] if config_name.startswith(prefix) and len(config_name) > len(prefix) else config_name


def summarize(rows: list[dict]) -> list[dict]:
    """One entry per model config (mean and sample std over seeds), sorted by final accuracy, best first."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["config"], []).append(row)
    models = []
    for name, runs in groups.items():
        entry = {"config": name, "model": runs[0]["model"], "family": runs[0]["family"], "seeds": len(runs),
                 "params": runs[0]["params"], "flops_per_example": runs[0]["flops_per_example"],
                 "steps": runs[0]["steps"], "batch_size": runs[0]["batch_size"]}
        for key in ("compile_seconds", "ms_per_step", "examples_per_sec", "train_seconds", "wall_seconds", "final_accuracy",
                    "best_accuracy", "final_loss"):
            entry[key], entry[key + "_std"] = _mean_std(r[key] for r in runs)
        models.append(entry)
    return sorted(models, key=lambda m: (-m["final_accuracy"], m["config"]))


def _si(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {suffix}"
    return f"{value:.3g}"


def _pm(mean: float, std: float, seeds: int) -> str:
    return f"{mean:.4f} ± {std:.4f}" if seeds > 1 else f"{mean:.4f}"


def markdown_table(models: list[dict], dataset: str, reference: dict | None = None) -> str:
    header = list(TABLE_HEADER)
    accuracy_ref = (reference or {}).get("accuracy") or {}
    if accuracy_ref:
        header.append("published")
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|"]
    for m in models:
        cells = [label_for(m["config"], dataset), m["family"], f"{m['params']:,}", _si(m["flops_per_example"]),
                 f"{m['compile_seconds']:.1f}", f"{m['ms_per_step']:.2f}", f"{m['examples_per_sec']:,.0f}",
                 f"{m['train_seconds']:.1f}", _pm(m["final_accuracy"], m["final_accuracy_std"], m["seeds"]),
                 _pm(m["best_accuracy"], m["best_accuracy_std"], m["seeds"])]
        if accuracy_ref:
            published = accuracy_ref.get(m["config"])
            cells.append(f"{published:.2f}" if published is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _markdown(models: list[dict], rows: list[dict], meta: dict, table: str) -> str:
    machine = meta.get("machine") or {}
    seeds = meta.get("seeds") or sorted({r["seed"] for r in rows})
    name, dataset = meta.get("name", ""), meta.get("dataset", "")
    lines = [f"# Compare: {name}" + (f" (dataset {dataset})" if name != dataset else ""), ""]
    if meta.get("command"):
        lines += ["Produced by:", "", "```", meta["command"], "```", ""]
    wall = meta.get("wall_seconds")
    trained, reused = meta.get("trained"), meta.get("reused")
    if wall is not None:
        detail = f" ({trained} runs trained, {reused} reused from earlier)" if reused else f" ({trained} runs)"
        lines.append(f"- Whole compare: **{clock(wall)}** wall time{detail}.")
    run_walls = [r.get("wall_seconds") for r in rows]
    if reused and all(w is not None for w in run_walls):
        lines.append(f"- The fit() calls that produced these {len(rows)} runs took {clock(sum(run_walls))} "
                     "in all (compile, training, evaluation and checkpoints).")
    lines += [f"- Dataset: {dataset}. Budget: {meta.get('budget', '-')} per run, the same for every model; "
              f"seeds {', '.join(map(str, seeds))}.",
              f"- Machine: {machine.get('cpu_count', '?')} CPUs, {machine.get('backend', '?')} backend "
              f"({machine.get('devices', '?')} device(s), {machine.get('device_kind', '?')}), "
              f"jax {machine.get('jax', '?')}, {machine.get('platform', '?')}."]
    load = machine.get("load_average")
    if load:
        lines.append(f"- Load average when the compare ended: {load[0]:.1f} (1 min), {load[2]:.1f} (15 min) on "
                     f"{machine.get('cpu_count', '?')} CPUs; timings rise with other jobs on the machine.")
    if meta.get("models"):
        lines.append(f"- Model configs: {', '.join(f'`{path}`' for path in meta['models'])}.")
    lines.append("")
    lines += [table, ""]
    lines += ["Columns: test accuracy as mean ± sample standard deviation over seeds. *final*: the last step's "
              "checkpoint (what `zoo eval RUN_DIR` restores); *at best val*: test accuracy of the checkpoint "
              "with the highest validation accuracy (selected on validation only, never on test). FLOPs/example: XLA cost "
              "analysis of the compiled inference forward pass (scans unrolled), divided by the batch size. "
              "ms/step, examples/s and train time exclude compilation and evaluation, and are means over seeds.",
              ""]
    reference = meta.get("reference") or {}
    if reference.get("accuracy"):
        lines += [f"Published: {reference.get('source', 'reference')}.", ""]
    resumed = [r for r in rows if r.get("resumed_from")]
    if resumed:
        lines += [f"{len(resumed)} run(s) were resumed from a checkpoint; their times cover the resumed part only.",
                  ""]
    lines += ["![test accuracy and train loss](curves.png)", "", "![accuracy against size and time](tradeoff.png)",
              "", "Per run: `results.csv`, `results.json`; run directories under `runs/<model>/seed<k>/` in the "
              "compare's workdir.", ""]
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict]) -> None:
    handle = io.StringIO(newline="")
    writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: ("" if row.get(key) is None else row.get(key)) for key in COLUMNS})
    atomic_write(path, handle.getvalue())


def write_report(report_dir: str | Path, rows: list[dict], meta: dict, runs_root: str | Path) -> dict:
    """Writes every report file; `runs_root` is where each row's `run_dir` (if relative) lives."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    models = summarize(rows)
    dataset = meta.get("dataset", "")
    table = markdown_table(models, dataset, meta.get("reference"))
    atomic_write(report_dir / "report.md", _markdown(models, rows, meta, table))
    write_csv(report_dir / "results.csv", rows)
    atomic_write(report_dir / "results.json",
                  json.dumps({"compare": meta, "models": models,
                              "runs": [{key: row.get(key) for key in COLUMNS} for row in rows]},
                             indent=2, default=_json_default) + "\n")
    colors = {m["config"]: f"C{i % 10}" for i, m in enumerate(models)}
    plot_curves(report_dir / "curves.png", rows, models, colors, Path(runs_root), meta)
    plot_tradeoff(report_dir / "tradeoff.png", models, colors, meta)
    return {"table": table, "models": models, "files": [str(report_dir / name) for name in FILES]}


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _curves(run_dir: Path) -> tuple[dict, dict]:
    """{step: test accuracy}, {step: train loss} from one run's metrics.jsonl."""
    path = run_dir / "metrics.jsonl"
    records = read_jsonl(path) if path.exists() else []
    test = {r["step"]: r["accuracy"] for r in records if r.get("split") == "test" and "accuracy" in r}
    train = {r["step"]: r["loss"] for r in records if r.get("split") == "train" and "loss" in r}
    return test, train


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
    """Test accuracy and train loss against step: per model the mean over seeds, min-max band shaded."""
    figure = _figure(12, 4.6)
    acc_ax, loss_ax = figure.subplots(1, 2)
    dataset = meta.get("dataset", "")
    for model in models:
        runs = [r for r in rows if r["config"] == model["config"]]
        tests, trains = zip(*(_curves(_run_path(r["run_dir"], runs_root)) for r in runs))
        label = f"{label_for(model['config'], dataset)} ({model['final_accuracy']:.3f})"
        for ax, series in ((acc_ax, tests), (loss_ax, trains)):
            band = _band([s for s in series if s])
            if band is None:
                continue
            steps, mean, low, high = band
            ax.plot(steps, mean, color=colors[model["config"]], label=label, lw=1.6,
                    marker="o" if len(steps) < 15 else None, ms=3)
            if len(series) > 1:
                ax.fill_between(steps, low, high, color=colors[model["config"]], alpha=0.2, lw=0)
    published = (meta.get("reference") or {}).get("accuracy") or {}
    for model in models:
        if model["config"] in published:
            acc_ax.axhline(published[model["config"]], color=colors[model["config"]], ls="--", lw=1, alpha=0.8)
    acc_ax.set(xlabel="step", ylabel="test accuracy",
               title="test accuracy (mean, min-max over seeds)" + ("; dashed: published" if published else ""))
    loss_ax.set(xlabel="step", ylabel="train loss", title="train loss (mean, min-max over seeds)", yscale="log")
    for ax in (acc_ax, loss_ax):
        ax.grid(True, alpha=0.3)
    acc_ax.legend(loc="lower right", fontsize=8)
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


def plot_tradeoff(path: Path, models: list[dict], colors: dict, meta: dict) -> None:
    """Final test accuracy against parameters and against training time (log x), error bars = std over seeds."""
    figure = _figure(12, 4.6)
    params_ax, time_ax = figure.subplots(1, 2)
    dataset = meta.get("dataset", "")
    for model in models:
        color, label = colors[model["config"]], label_for(model["config"], dataset)
        y, yerr = model["final_accuracy"], model["final_accuracy_std"]
        params_ax.errorbar(model["params"], y, yerr=yerr, fmt="o", color=color, capsize=3)
        time_ax.errorbar(model["train_seconds"], y, yerr=yerr, xerr=model["train_seconds_std"], fmt="o",
                         color=color, capsize=3)
        for ax, x in ((params_ax, model["params"]), (time_ax, model["train_seconds"])):
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    params_ax.set(xscale="log", xlabel="parameters", ylabel="final test accuracy",
                  title="accuracy vs parameters")
    time_ax.set(xscale="log", xlabel="training time (s, excluding compile)", ylabel="final test accuracy",
                title="accuracy vs training time")
    for ax in (params_ax, time_ax):
        ax.grid(True, which="both", alpha=0.3)
        ax.xaxis.set_major_formatter(_si_formatter())
        ax.xaxis.set_minor_formatter(_si_formatter(minor=True))
        ax.margins(x=0.15, y=0.1)
    figure.suptitle(_title(meta))
    figure.savefig(path)
