"""The command line: parse arguments, call the library, print. Bad input: one line, exit 2."""

from __future__ import annotations

import argparse
import json
import os
import sys

from zoo.errors import ZooError
from zoo.util import printable


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's usage dump becomes one line, exit 2
        raise ZooError(f"{message} (see `{self.prog} --help`)")


def _parse_shape(text: str) -> tuple:
    try:
        shape = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ZooError(f"--input-shape '{text}' must be integers separated by commas, e.g. 8,8,1") from None
    if not shape or min(shape) < 1:
        raise ZooError(f"--input-shape '{text}' must be positive integers, e.g. 8,8,1")
    return shape


def cmd_list(args) -> int:
    from zoo import models

    shape = _parse_shape(args.input_shape)
    kind = "tokens" if args.tokens else None
    rows = []
    for name in models.list_models(args.pattern):
        entry = models.get_entry(name)
        try:
            model = models.build(name, args.num_classes, vocab_size=args.vocab_size)
            count = f"{models.param_count(model, shape, 'int32' if kind else 'float32'):,}"
        except Exception:  # noqa: BLE001 - a model that cannot take this shape shows "-"
            count = "-"
        rows.append((name, entry.family, count, entry.description))
    if args.json:
        print(json.dumps([dict(zip(("name", "family", "params", "description"), r)) for r in rows], indent=2))
        return 0
    print(f"parameters for input {shape}, {args.num_classes} classes")
    print(_table(("model", "family", "params", "description"), rows, right=(2,)))
    return 0


def cmd_info(args) -> int:
    from zoo.comparison.inspect import inspect_model

    shape = _parse_shape(args.input_shape)
    if args.batch_size < 1:
        raise ZooError(f"--batch-size {args.batch_size} must be a positive integer, e.g. 128")
    info = inspect_model(args.model, shape, args.num_classes, args.vocab_size, args.tokens, args.batch_size,
                         args.set or [])
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    rows = [(row["path"] or f"({info['model']})", row["module"], row["output"], f"{row['params']:,}")
            for row in info["layers"]]
    print(f"{info['model']} ({info['family']}), input {tuple(info['input_shape'])} ({info['kind']}), "
          f"{info['num_classes']} classes")
    print(_table(("layer", "module", "output (batch 1)", "params"), rows, right=(3,)))
    flops, memory = info["forward_flops_per_example"], info["train_step_memory"]
    print(f"parameters: {info['params']:,}")
    print(f"forward FLOPs per example: {'-' if flops is None else f'{flops:,.0f}'} (XLA cost analysis, as "
          "`zoo compare` reports them)")
    if memory["arguments"] is None:
        print(f"train step memory: not reported by XLA on {memory['backend']}")
        return 0
    print(f"train step at batch {memory['batch_size']} ({memory['optimizer']}, {memory['backend']}; XLA memory "
          f"analysis): arguments {_mib(memory['arguments'])}, temporaries {_mib(memory['temporaries'])}, outputs "
          f"{_mib(memory['outputs'])} ({_mib(memory['aliased'])} of them written over the donated arguments)")
    return 0


def _mib(count: int) -> str:
    return f"{count / 2**20:.2f} MiB"


def _table(header, rows, right=()) -> str:
    header, *rows = [[printable(v) for v in row] for row in (header, *rows)]
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    fmt = lambda row: "  ".join(v.rjust(w) if i in right else v.ljust(w)  # noqa: E731
                                for i, (v, w) in enumerate(zip(row, widths))).rstrip()
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def _progress(prefix=""):
    from zoo.metrics import Progress

    return Progress(stream=err(), prefix=prefix)


def cmd_train(args) -> int:
    from pathlib import Path

    from zoo import config as config_lib
    from zoo.training import fit

    config = config_lib.load(args.config, args.set or [])
    workdir = Path(args.workdir or Path("runs") / config.name)
    seeds = config_lib.parse_seeds(args.seeds) if args.seeds is not None else None
    primary = _start_distributed(args)
    if seeds is not None:
        return _train_population(config, seeds, workdir, primary)
    result = fit(config, workdir, _progress())
    if result.get("stopped"):
        return _stopped(result, f"rerun the same command to resume from {workdir}")
    if primary:  # process 0 reports the run
        _report_run(config, result, workdir)
    return 0


def _stopped(result: dict, resume: str) -> int:
    import signal

    print(f"zoo: stopped by {result['stopped']} at step {result['step']}, checkpoint written; {resume}", file=err())
    return 128 + signal.Signals[result["stopped"]]


def _report_run(config, result: dict, workdir) -> float:
    """Prints the run's line (and its early stop); returns its test value of the task's main metric."""
    from zoo import tasks

    if result.get("early_stopped"):
        print(f"zoo: stopped early at step {result['early_stopped']['step']}: {result['early_stopped']['reason']}",
              file=err())
    final, main = result["final"], tasks.describe(config.task).main().name  # classify: accuracy
    val = f"val {main} {final[f'val_{main}']:.4f}  " if f"val_{main}" in final else ""
    print(f"{config.name}: {result['model']} ({result['params']:,} params) step {result['final_step']} "
          f"{val}test {main} {final[f'test_{main}']:.4f} loss {final['test_loss']:.4f}  run dir {workdir}")
    return final[f"test_{main}"]


def _train_population(config, seeds: tuple, workdir, primary: bool) -> int:
    """`zoo train --seeds`: one member per seed, in WORKDIR/seed<k>, trained as one population."""
    import dataclasses

    import numpy as np

    from zoo import tasks
    from zoo.training.population import fit_population

    members = [dataclasses.replace(config, seed=seed) for seed in seeds]
    run_dirs = [workdir / f"seed{seed}" for seed in seeds]
    results = fit_population(members, run_dirs, _progress())
    stopped = next((result for result in results if result.get("stopped")), None)
    if stopped:
        return _stopped({**stopped, "step": stopped["step"] if stopped["step"] is not None else "-"},
                        f"rerun the same command to resume every member under {workdir}")
    if not primary:
        return 0
    values = [_report_run(member, result, run_dir) for member, result, run_dir in zip(members, results, run_dirs)]
    main = tasks.describe(config.task).main().name
    print(f"{config.name}: {len(seeds)} seeds as one population: test {main} mean {np.mean(values):.4f}, "
          f"std {np.std(values, ddof=1) if len(values) > 1 else 0.0:.4f}, min {min(values):.4f}, max "
          f"{max(values):.4f}")
    return 0


def _start_distributed(args) -> bool:
    """Joins the cluster when asked (--distributed, or any of its process flags); True on process 0."""
    if not (args.distributed or args.coordinator or args.num_processes is not None or args.process_id is not None
            or args.coordinator_bind):
        return True
    from zoo import distributed

    distributed.initialize(args.coordinator, args.num_processes, args.process_id, bind=args.coordinator_bind)
    return distributed.is_primary()


def cmd_launch(args) -> int:
    from zoo.launch import launch_local

    return launch_local(args.command, args.local, args.devices_per_process, stderr=err())


def cmd_eval(args) -> int:
    from zoo.inference.evaluate import evaluate

    primary = _start_distributed(args)
    result = evaluate(args.run_dir, step=args.step, best=args.best, allow_changed_data=args.allow_changed_data,
                      weights=args.weights)
    if not primary:
        return 0
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    from zoo import tasks

    recorded = result.get("recorded") or {}
    fmt = lambda value: "-" if value is None else f"{value:.4f}"  # noqa: E731
    val = result.get("val") or {}
    shown = [m.name for m in tasks.describe(result.get("task")).report]  # classify: accuracy
    cells = [fmt(split.get(name)) for name in shown for split in (val, result["test"])]
    rows = [(result["model"], result["dataset"], result["step"], *cells, fmt(result["test"]["loss"]),
             fmt(recorded.get(f"val_{shown[0]}")), fmt(recorded.get(f"test_{shown[0]}")))]
    header = [f"{split} {name}" for name in shown for split in ("val", "test")]
    columns = ("model", "dataset", "step", *header, "test loss", "recorded val", "recorded test")
    if result.get("weights") == "ema" or args.weights:  # a run with a moving average of its weights (train.ema)
        columns, rows = (*columns, "weights"), [(*rows[0], result["weights"])]
    print(_table(columns, rows, right=tuple(range(2, 6 + len(header)))))
    return 0


def _step_arg(text: str):
    if text in ("latest", "best"):
        return text
    try:
        return int(text)
    except ValueError:
        raise ZooError(f"--step '{text}' must be 'latest', 'best' or a step number") from None


def cmd_predict(args) -> int:
    from pathlib import Path

    from zoo.inference.predict import predict, to_csv

    rows = predict(args.target, args.inputs, step=_step_arg(args.step), top_k=args.top_k,
                   note=lambda line: print(f"zoo: {line}", file=err()), weights=args.weights)
    if args.json:  # exact values (JSON escapes control characters itself)
        text = json.dumps(rows) + "\n"
    else:  # a CSV for the terminal gets names from the data escaped; a file keeps them exact
        shown = ("input", "class", "top_k")
        text = to_csv(rows if args.out else [{**row, **{key: printable(row[key]) for key in shown if key in row}}
                                             for row in rows])
    if args.out:
        from zoo.util import atomic_write

        out = Path(args.out)
        if not out.parent.is_dir():
            raise ZooError(f"cannot write '{out}': directory '{out.parent}' does not exist")
        atomic_write(out, text)
        print(f"{len(rows)} predictions written to {out}", file=err())
    else:
        sys.stdout.write(text)
    return 0


def cmd_sample(args) -> int:
    """Text on stdout (the prompt, then the continuation); timing and notes on stderr."""
    from zoo.inference.loaded import load_run
    from zoo.inference.sample import generate

    run = load_run(args.run_dir, _step_arg(args.step))
    result = generate(run, args.prompt, args.max_tokens, args.temperature, args.top_k, args.top_p, args.seed)
    if result.note:
        print(f"zoo: {result.note}", file=err())
    # line breaks kept; other control characters a model may emit (a terminal escape) are shown escaped
    sys.stdout.write("\n".join(printable(line) for line in (args.prompt + result.text).split("\n")) + "\n")
    sys.stdout.flush()  # the text before the timing line, where both go to one terminal
    print(f"zoo: {len(result.tokens)} tokens in {result.seconds:.2f} s: {result.tokens_per_second:,.0f} tokens/s "
          f"(compiled in {result.compile_seconds:.1f} s; {run.model.info.name}, step {run.step} of {args.run_dir})",
          file=err())
    return 0


def cmd_bench(args) -> int:
    """Runs benchmarks/bench.py of this source checkout in a child process (it imports PyTorch)."""
    import shlex
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"
    if not script.is_file():
        raise ZooError(f"zoo bench runs {script}, which is not there: run it from a source checkout "
                       "(git clone, then pip install -e '.[bench]')")
    forwarded = [*(["--workloads", args.workloads] if args.workloads else []), *(["--quick"] if args.quick else []),
                 *(["--rounds", str(args.rounds)] if args.rounds else []),
                 *(["--repeat", str(args.repeat)] if args.repeat != 1 else []),
                 *(["--precision", args.precision] if args.precision != "float32" else []),
                 *(["--out", args.out] if args.out is not None else [])]  # none: bench.py's runs/bench/<time>/
    command = shlex.join(["zoo", "bench", *forwarded])
    forwarded += ["--command", command]
    return subprocess.run([sys.executable, str(script), *forwarded], stderr=err()).returncode


def cmd_compare(args) -> int:
    import shlex
    from pathlib import Path

    from zoo.comparison.runner import compare, load_compare

    config = load_compare(args.config, args.set or [])
    workdir = Path(args.workdir or Path("runs") / f"compare_{config.name}")
    primary = _start_distributed(args)
    sets = [part for item in args.set or [] for part in ("--set", item)]
    command = shlex.join(["zoo", "compare", args.config, "--workdir", str(workdir), *sets])
    if args.budget_s is not None:
        if args.budget_s <= 0:
            raise ZooError(f"--budget-s {args.budget_s:g} must be a positive number of seconds, e.g. 3600")
        command = shlex.join([*shlex.split(command), "--budget-s", f"{args.budget_s:g}"])
    result = compare(config, workdir, _progress(), command=command, budget_s=args.budget_s)
    if result.get("stopped"):
        print(f"stopped by {result['stopped']} in {result['run_dir']}; rerun the same command to resume "
              "(finished runs are reused)", file=err())
        return 130
    if not primary:
        return 0
    print(result["table"])
    print(f"{result['trained']} runs trained, {result['reused']} reused, {result['wall_seconds']:.0f} s; "
          f"report: {Path(result['report_dir']) / 'report.md'}")
    if result["skipped"]:
        print(f"--budget-s {args.budget_s:g} ran out: {len(result['skipped'])} runs not started (listed in the "
              "report); rerun the same command to train them", file=err())
    return 0


def cmd_import(args) -> int:
    from zoo.interop.importer import import_run

    shape = _parse_shape(args.input_shape) if args.input_shape else None
    result = import_run(args.model, args.weights, args.out, dataset=args.dataset, num_classes=args.num_classes,
                        config_path=args.config, overrides=args.set or [], input_shape=shape,
                        preprocess=args.preprocess)
    fresh = f"; new head: {', '.join(result['reinitialised'])}" if result["reinitialised"] else ""
    if result["test"] is None:  # imported for prediction alone
        print(f"{result['model']} from {args.weights} -> {result['run_dir']}: for prediction on inputs of shape "
              f"{tuple(result['input_shape'])}, preprocessing '{result['preprocess']}'{fresh} "
              f"(zoo predict {result['run_dir']} IMAGE...)")
        return 0
    print(f"{result['model']} from {args.weights} -> {result['run_dir']}: test accuracy on "
          f"{result['dataset']} {result['test']['accuracy']:.4f}{fresh}")
    return 0


def cmd_export(args) -> int:
    from zoo.interop.export import export_run

    platforms = [p.strip() for p in args.platforms.split(",") if p.strip()]
    result = export_run(args.run_dir, args.out, step=_step_arg(args.step), platforms=platforms, fmt=args.format,
                        weights=args.weights)
    header = result["header"]
    print(f"{header['model']} step {header['run_step']} -> {result['out']} ({header['format']}, input "
          f"{header['input_shape']} {header['dtype']}, batch {header['batch']}, {', '.join(header['platforms'])})")
    return 0


def cmd_runs(args) -> int:
    from zoo.rundir import list_runs

    rows = list_runs(args.dir)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    table = [(r["name"], r["model"] or "-", r["dataset"] or "-", f"{r['steps_done']}/{r['steps_total'] or '?'}",
              fmt(r["validation_last"]), fmt(r["validation_best"]), fmt(r["test_last"]), fmt(r["test_at_best_val"]),
              r["status"], "-" if r["wall_seconds"] is None else f"{r['wall_seconds']:.0f} s") for r in rows]
    # the test accuracy of the checkpoint chosen on validation: never a number chosen on test
    header = ("run", "model", "dataset", "steps", "val last", "val best", "test last", "test @ best val",
              "status", "wall")
    if any(r["metric"] != "accuracy" for r in rows):  # tasks beside classify: say which metric each row holds
        header, table = (*header[:4], "metric", *header[4:]), [(*row[:4], r["metric"], *row[4:])
                                                               for r, row in zip(rows, table)]
        print(_table(header, table, right=(3, 5, 6, 7, 8, 10)))
        return 0
    print(_table(header, table, right=(3, 4, 5, 6, 7, 9)))
    return 0


def _add_distributed(p) -> None:
    p.add_argument("--distributed", action="store_true",
                   help="join a multi-process run: jax.distributed.initialize() with JAX's cluster detection "
                        "(SLURM, Open MPI, TPU, Kubernetes) or the flags below")
    p.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address (else $ZOO_COORDINATOR)")
    p.add_argument("--num-processes", metavar="N", help="processes in the run (else $ZOO_NUM_PROCESSES)")
    p.add_argument("--process-id", metavar="I", help="this process, 0..N-1 (else $ZOO_PROCESS_ID)")
    p.add_argument("--coordinator-bind", metavar="HOST[:PORT]",
                   help="where process 0's coordinator service listens (else $ZOO_COORDINATOR_BIND, else the "
                        "--coordinator address, which must then be process 0's own; 0.0.0.0: every interface)")


def _list_arguments(p) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="glob over names, e.g. 'resnet*'")
    p.add_argument("--input-shape", default="8,8,1", help="one example's shape (default 8,8,1)")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--tokens", action="store_true", help="inputs are token ids")
    p.add_argument("--vocab-size", type=int, default=None)
    p.add_argument("--json", action="store_true")


def _info_arguments(p) -> None:
    p.add_argument("model", help="a registered name (see `zoo list`)")
    p.add_argument("--input-shape", default="8,8,1", help="one example's shape (default 8,8,1)")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--tokens", action="store_true", help="inputs are token ids")
    p.add_argument("--vocab-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=64, help="the train step's batch (default 64)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a config key, e.g. model.width=32, model.shortcut=identity_pad, optimizer.name=sgd")
    p.add_argument("--json", action="store_true")


def _train_arguments(p) -> None:
    p.add_argument("config", help="a YAML config, e.g. configs/digits/cnn.yaml")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. train.steps=100")
    p.add_argument("--workdir", help="run directory (default runs/<config name>)")
    p.add_argument("--seeds", metavar="SEEDS",
                   help="train one run per seed (e.g. 0-7, or 0,3,5) as one population, in WORKDIR/seed<k> "
                        "(docs/population.md)")
    _add_distributed(p)


def _weights_argument(p) -> None:
    p.add_argument("--weights", choices=("ema", "raw"),
                   help="a run's moving average of its weights (train.ema; the default where it keeps one) or its "
                        "raw weights")


def _eval_arguments(p) -> None:
    p.add_argument("run_dir")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--step", type=int, help="a checkpointed step (default: the latest)")
    group.add_argument("--best", action="store_true", help="the best step by the run's metric")
    p.add_argument("--json", action="store_true")
    p.add_argument("--allow-changed-data", action="store_true",
                   help="evaluate even though the data files changed since training")
    _add_distributed(p)
    _weights_argument(p)


def _predict_arguments(p) -> None:
    p.add_argument("target", help="a run directory, or a .zoo file from `zoo export`")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="an image, a folder of images, a .npy, a .npz (its 'x' array) or a .csv (one row each)")
    p.add_argument("--step", default="latest", help="'latest' (default), 'best' (by validation) or a step number")
    p.add_argument("--top-k", type=int, default=3, help="classes listed per example (default 3)")
    p.add_argument("--out", help="write the CSV here instead of standard output")
    p.add_argument("--json", action="store_true", help="one JSON list of rows, with every class probability")
    _weights_argument(p)


def _sample_arguments(p) -> None:
    p.add_argument("run_dir", help="a language-model run directory (model *_lm, data text or pydoc)")
    p.add_argument("--prompt", required=True, help="the text to continue (characters of the run's vocabulary)")
    p.add_argument("--max-tokens", type=int, default=200, help="tokens to generate (default 200)")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; 0: greedy (default 1)")
    p.add_argument("--top-k", type=int, help="sample from the K likeliest tokens only")
    p.add_argument("--top-p", type=float, help="sample from the nucleus: the likeliest tokens holding mass P")
    p.add_argument("--seed", type=int, default=0, help="same seed, same text (default 0)")
    p.add_argument("--step", default="best", help="'best' (by validation, default), 'latest' or a step number")


def _compare_arguments(p) -> None:
    p.add_argument("config", help="a compare YAML, e.g. configs/compare/digits.yaml")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. budget.steps=100")
    p.add_argument("--workdir", help="where runs/ and report/ go (default runs/compare_<name>)")
    p.add_argument("--budget-s", type=float, metavar="S",
                   help="launch no new run after S seconds; the report lists what was skipped (rerun to finish)")
    _add_distributed(p)


def _launch_arguments(p) -> None:
    p.add_argument("--local", type=int, required=True, metavar="N", help="processes to start on 127.0.0.1")
    p.add_argument("--devices-per-process", type=int, metavar="K",
                   help="simulated CPU devices per process (and K of CUDA_VISIBLE_DEVICES each, when set)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- train CONFIG [args] (or compare, eval)")


def _bench_arguments(p) -> None:
    p.add_argument("--workloads", help="comma-separated subset of mlp,cnn,resnet20,lstm,transformer,lm_lstm,"
                                       "lm_transformer,dispatch")
    p.add_argument("--quick", action="store_true", help="3 short rounds instead of 9")
    p.add_argument("--rounds", type=int, help="interleaved timing rounds (default 9, or 3 with --quick)")
    p.add_argument("--repeat", type=int, default=1,
                   help="run the whole benchmark N times in a row; RESULTS.md gets one table per run")
    p.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                   help="the zoo model's compute precision (model.precision); bfloat16 writes RESULTS_bfloat16.md")
    p.add_argument("--out", help="where RESULTS.md and results.json go (default: runs/bench/<UTC time>/, a new "
                   "folder; --out benchmarks rewrites the committed record; '' for none)")


def _import_arguments(p) -> None:
    p.add_argument("model", help="a zoo model: resnet18..152, vit_tiny, transformer, lstm, gru, rnn")
    p.add_argument("weights", help="a .safetensors file in torchvision / timm / torch.nn naming")
    p.add_argument("--out", required=True, help="the new run directory")
    p.add_argument("--dataset", help="the dataset the run evaluates on (default: the config's; none: the run "
                   "is for prediction alone, with the weights' own preprocessing)")
    p.add_argument("--input-shape", help="without a dataset: one example's shape (default: what the file implies; "
                   "recurrent nets need STEPS,FEATURES)")
    p.add_argument("--preprocess", choices=("imagenet", "inception", "none"),
                   help="without a dataset: the weights' input normalisation (default: imagenet for torchvision "
                        "ResNets, inception (0.5/0.5) for timm ViTs, none for recurrent nets)")
    p.add_argument("--num-classes", type=int, help="a new head of this many classes (the file's is skipped)")
    p.add_argument("--config", help="a YAML config for later fine-tuning (default: zoo's defaults)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. model.num_heads=3")


def _export_arguments(p) -> None:
    p.add_argument("run_dir")
    p.add_argument("--out", required=True, help="the file to write, e.g. model.zoo or model.onnx")
    p.add_argument("--step", default="latest", help="a step number, 'latest' (default) or 'best'")
    p.add_argument("--format", default="zoo", help="zoo (jax.export, default) or onnx (needs the onnx extra)")
    p.add_argument("--platforms", default="cpu", help="jax.export platforms, e.g. cpu,cuda,tpu (default cpu)")
    _weights_argument(p)


def _runs_arguments(p) -> None:
    p.add_argument("dir", nargs="?", default="runs", help="folder holding run directories (default runs/)")
    p.add_argument("--json", action="store_true")


# (command, help, the function adding its arguments, the function running it), in `zoo --help` order
COMMANDS = (
    ("list", "every model with family, parameter count and description", _list_arguments, cmd_list),
    ("info", "one model's layers, parameters, forward FLOPs and train-step memory", _info_arguments, cmd_info),
    ("train", "train a config (resumes if the run directory has checkpoints)", _train_arguments, cmd_train),
    ("eval", "evaluate a run's checkpoint on the test set", _eval_arguments, cmd_eval),
    ("predict", "predict with a run's checkpoint or a .zoo export on images, folders, .npy/.npz or .csv",
     _predict_arguments, cmd_predict),
    ("sample", "generate text from a language-model run: --prompt TEXT --max-tokens N", _sample_arguments,
     cmd_sample),
    ("compare", "train every model x seed of a compare config, then write a report", _compare_arguments, cmd_compare),
    ("launch", "run train, compare or eval in N processes on this machine (jax.distributed)", _launch_arguments,
     cmd_launch),
    ("bench", "time a training step of each family: zoo vs plain Flax vs PyTorch", _bench_arguments, cmd_bench),
    ("import", "a run directory from PyTorch weights (.safetensors)", _import_arguments, cmd_import),
    ("export", "a run's model as one file: jax.export (.zoo) or ONNX", _export_arguments, cmd_export),
    ("runs", "one row per run directory under DIR: steps, accuracies, status", _runs_arguments, cmd_runs),
)


# Commands that compile: JAX's persistent compilation cache is on for them (zoo.util.enable_compile_cache).
COMPILING = frozenset({"train", "eval", "predict", "sample", "compare", "import", "export", "info"})


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="zoo", description="Train, compare and restore JAX models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, text, add_arguments, run in COMMANDS:
        command = sub.add_parser(name, help=text)
        add_arguments(command)
        if name in COMPILING:
            command.add_argument("--no-compile-cache", action="store_true",
                                 help="compile without JAX's persistent compilation cache (default: on, in "
                                      "$ZOO_CACHE_DIR, else $XDG_CACHE_HOME/zoo, else ~/.cache/zoo)")
        command.set_defaults(func=run)
    return parser


def _compile_cache(args) -> None:
    """JAX's persistent compilation cache for the commands that compile, unless --no-compile-cache."""
    if getattr(args, "no_compile_cache", None) is False:  # only COMPILING commands have the flag (launch's
        # own `command` is the list of its arguments)
        from zoo.util import enable_compile_cache

        enable_compile_cache(lambda line: print(f"zoo: warning: {line}", file=err(), flush=True))


def _quiet_libraries() -> None:
    # Orbax logs through absl at WARNING for routine events (read-only managers and the like), and
    # logs tracebacks of the failures it then raises (we report those in one line); asyncio logs
    # TensorStore read errors a second time.
    import logging

    logging.getLogger("absl").setLevel(logging.CRITICAL)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


_STDERR = None  # set by run(): a copy of the user's stderr that stays open when fd 2 is muted at exit


def err():
    """Where our messages and progress go."""
    return _STDERR or sys.stderr


def _refuse(message: str) -> None:
    print(f"zoo: error: {message}", file=err(), flush=True)


def main(argv=None, mute_on_refusal: bool = False, tune_host: bool = False) -> int:
    """Runs one command; `mute_on_refusal` (the console script) mutes fd 2 before a refusal is printed;
    `tune_host` (the console script: a process of its own) sets the host allocator up for the
    commands that compute (zoo/host.py)."""
    _quiet_libraries()
    try:
        args = make_parser().parse_args(argv)
        if tune_host and hasattr(args, "no_compile_cache"):  # the COMPILING commands, before any computation
            from zoo import host

            host.tune_allocator()
        _compile_cache(args)
        code = args.func(args)
        sys.stdout.flush()  # a reader of stdout that has gone shows here, not at exit
        return code
    except (ZooError, OSError) as error:  # OSError: a path that cannot be read or written
        if isinstance(error, BrokenPipeError) and _stdout_gone():  # `zoo runs | head`: head has what it wanted
            _stdout_to_devnull()
            return 0
        if mute_on_refusal:
            _mute_libraries()
        _refuse(str(error))
        return error.exit_code if isinstance(error, ZooError) else 2
    except KeyboardInterrupt:
        print("zoo: interrupted", file=err())
        return 130
    except Exception as error:  # noqa: BLE001 - only a lost peer of a multi-process run is ours to word
        from zoo import distributed

        if not distributed.is_lost_peer(error):
            raise
        _refuse(distributed.lost_peer_message(error))
        return 1  # run() exits at once: JAX's shutdown barrier would wait for the dead process


def _stdout_gone() -> bool:
    """Whether nobody reads our stdout any more: a pipe or socket whose reader closed it polls as
    POLLERR or POLLHUP (False where that cannot be asked)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll here, or a stdout without a file descriptor
        return False


def _stdout_to_devnull() -> None:
    """Points stdout's file descriptor at /dev/null, so that what is still buffered for a reader that
    has gone is dropped quietly at exit (the recipe of Python's `signal` documentation on SIGPIPE)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _own_stderr() -> None:
    """Our messages get their own handle on the user's stderr; fd 2 itself stays where it was, so
    Python warnings, XLA's messages (out of memory) and tracebacks reach the user as usual."""
    global _STDERR
    _STDERR = os.fdopen(os.dup(2), "w", buffering=1)


def _mute_libraries() -> None:
    """Before a refusal: after a failed checkpoint read, TensorStore's threads may still print
    tracebacks (Orbax's closed event loop) at any moment, racing our one-line message; the process
    only exits after it, so fd 2 goes to /dev/null until the end. ZOO_DEBUG=1 keeps them."""
    if os.environ.get("ZOO_DEBUG"):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = open(os.devnull, "w")


def _is_late_loop_wakeup(exc_type, value, tb) -> bool:
    """A TensorStore thread waking an asyncio loop Orbax has already closed (after a failed read)."""
    import traceback

    return (exc_type is RuntimeError and str(value) == "Event loop is closed"
            and any(frame.f_code.co_name == "call_soon_threadsafe" for frame, _ in traceback.walk_tb(tb)))


def _drop_late_loop_wakeups() -> None:
    """After a failed checkpoint read a TensorStore thread may call `call_soon_threadsafe` on Orbax's
    closed event loop, and Python prints that RuntimeError's traceback at any moment, even before
    our one-line refusal mutes fd 2. Only that exception is dropped (ZOO_DEBUG=1 keeps it); every
    other one reaches the previous hooks."""
    if os.environ.get("ZOO_DEBUG"):
        return
    except_hook, unraisable_hook = sys.excepthook, sys.unraisablehook

    def excepthook(exc_type, value, tb):
        if not _is_late_loop_wakeup(exc_type, value, tb):
            except_hook(exc_type, value, tb)

    def unraisablehook(unraisable):
        if not _is_late_loop_wakeup(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback):
            unraisable_hook(unraisable)

    sys.excepthook, sys.unraisablehook = excepthook, unraisablehook


def console_main() -> None:
    """The console script. After a refusal, exit at once: Orbax's background threads may still be
    unwinding a failed read, and interpreter teardown would wait for them."""
    from zoo import launch

    if launch.wants_supervisor(sys.argv[1:]):  # one process of a multi-process run: see launch.supervise
        sys.exit(launch.supervise(sys.argv[1:]))
    _own_stderr()
    _drop_late_loop_wakeups()
    code = main(mute_on_refusal=True, tune_host=True)
    if code:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            pass  # the reader has gone; os._exit drops the rest
        err().flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console_main()
