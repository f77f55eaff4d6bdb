"""The command line: parse arguments, call the library, print. Bad input: one line, exit 2."""

from __future__ import annotations

import argparse
import json
import os
import sys

from zoo.errors import ZooError


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


def _table(header, rows, right=()) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = lambda row: "  ".join(str(v).rjust(w) if i in right else str(v).ljust(w)  # noqa: E731
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
    if args.distributed:
        import jax

        jax.distributed.initialize()
    result = fit(config, workdir, _progress())
    if result.get("stopped"):
        print(f"zoo: stopped by {result['stopped']} at step {result['step']}, checkpoint written; rerun the "
              f"same command to resume from {workdir}", file=err())
        import signal

        return 128 + signal.Signals[result["stopped"]]
    final = result["final"]
    val = f"val accuracy {final['val_accuracy']:.4f}  " if "val_accuracy" in final else ""
    print(f"{config.name}: {result['model']} ({result['params']:,} params) step {result['final_step']} "
          f"{val}test accuracy {final['test_accuracy']:.4f} loss {final['test_loss']:.4f}  run dir {workdir}")
    return 0


def cmd_eval(args) -> int:
    from zoo.evaluate import evaluate

    result = evaluate(args.run_dir, step=args.step, best=args.best)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    recorded = result.get("recorded") or {}
    fmt = lambda value: "-" if value is None else f"{value:.4f}"  # noqa: E731
    val = result.get("val") or {}
    rows = [(result["model"], result["dataset"], result["step"], fmt(val.get("accuracy")),
             fmt(result["test"]["accuracy"]), fmt(result["test"]["loss"]),
             fmt(recorded.get("val_accuracy")), fmt(recorded.get("test_accuracy")))]
    print(_table(("model", "dataset", "step", "val accuracy", "test accuracy", "test loss",
                  "recorded val", "recorded test"), rows, right=(2, 3, 4, 5, 6, 7)))
    return 0


def cmd_bench(args) -> int:
    import shlex
    from pathlib import Path

    from zoo import bench

    names = [n.strip() for n in args.workloads.split(",") if n.strip()] if args.workloads else list(bench.WORKLOADS)
    dispatch = "dispatch" in names or not args.workloads
    names = [n for n in names if n != "dispatch"]
    unknown = [n for n in names if n not in bench.WORKLOADS]
    if unknown:
        raise ZooError(f"unknown workload '{unknown[0]}': choose from {', '.join([*bench.WORKLOADS, 'dispatch'])}")
    rounds = args.rounds or (3 if args.quick else 9)
    report = bench.run_benchmark(names, rounds, 0.1 if args.quick else 0.3, dispatch=dispatch,
                                 log=lambda line: print(line, file=err()))
    program = sys.argv[0]
    command = shlex.join(["python", program, *sys.argv[1:]] if program.endswith(".py")
                         else ["zoo", *sys.argv[1:]])
    print(bench.text_table(*bench.table_rows(report)))
    print(f"float32 matmul ceiling: {report['matmul_ceiling_gflops']:.0f} GFLOP/s; "
          f"PyTorch threads: {report['torch_threads'] or 'not installed'}")
    if args.out:
        md, js = bench.write_outputs(report, command, Path(args.out))
        print(f"wrote {md} and {js}")
    return 0


def cmd_compare(args) -> int:
    import shlex
    from pathlib import Path

    from zoo.compare import compare, load_compare

    config = load_compare(args.config, args.set or [])
    workdir = Path(args.workdir or Path("runs") / f"compare_{config.name}")
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
    print(result["table"])
    print(f"{result['trained']} runs trained, {result['reused']} reused, {result['wall_seconds']:.0f} s; "
          f"report: {Path(result['report_dir']) / 'report.md'}")
    if result["skipped"]:
        print(f"--budget-s {args.budget_s:g} ran out: {len(result['skipped'])} runs not started (listed in the "
              "report); rerun the same command to train them", file=err())
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="zoo", description="Train, compare and restore JAX models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="every model with family, parameter count and description")
    p.add_argument("pattern", nargs="?", default="*", help="glob over names, e.g. 'resnet*'")
    p.add_argument("--input-shape", default="8,8,1", help="one example's shape (default 8,8,1)")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--tokens", action="store_true", help="inputs are token ids")
    p.add_argument("--vocab-size", type=int, default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("train", help="train a config (resumes if the run directory has checkpoints)")
    p.add_argument("config", help="a YAML config, e.g. configs/digits/cnn.yaml")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. train.steps=100")
    p.add_argument("--workdir", help="run directory (default runs/<config name>)")
    p.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize() first")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run's checkpoint on the test set")
    p.add_argument("run_dir")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--step", type=int, help="a checkpointed step (default: the latest)")
    group.add_argument("--best", action="store_true", help="the best step by the run's metric")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="train every model x seed of a compare config, then write a report")
    p.add_argument("config", help="a compare YAML, e.g. configs/compare/digits.yaml")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. budget.steps=100")
    p.add_argument("--workdir", help="where runs/ and report/ go (default runs/compare_<name>)")
    p.add_argument("--budget-s", type=float, metavar="S",
                   help="launch no new run after S seconds; the report lists what was skipped (rerun to finish)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("bench", help="time a training step of each family: zoo vs plain Flax vs PyTorch")
    p.add_argument("--workloads", help="comma-separated subset of mlp,cnn,resnet20,lstm,transformer,dispatch")
    p.add_argument("--quick", action="store_true", help="3 short rounds instead of 9")
    p.add_argument("--rounds", type=int, help="interleaved timing rounds (default 9, or 3 with --quick)")
    p.add_argument("--out", default="benchmarks", help="where RESULTS.md and results.json go ('' for none)")
    p.set_defaults(func=cmd_bench)
    return parser


def _quiet_libraries() -> None:
    # Orbax logs through absl at WARNING for routine events (read-only managers and the like), and
    # logs tracebacks of the failures it then raises (we report those in one line); asyncio logs
    # TensorStore read errors a second time.
    import logging

    logging.getLogger("absl").setLevel(logging.CRITICAL)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


_STDERR = None  # set by run(): our own stderr, apart from the one libraries' threads write to


def err():
    """Where our messages and progress go."""
    return _STDERR or sys.stderr


def _refuse(message: str) -> None:
    print(f"zoo: error: {message}", file=err(), flush=True)


def main(argv=None) -> int:
    _quiet_libraries()
    try:
        args = make_parser().parse_args(argv)
        return args.func(args)
    except ZooError as error:
        _refuse(str(error))
        return error.exit_code
    except OSError as error:  # a path that cannot be read or written: no traceback either
        _refuse(str(error))
        return 2
    except KeyboardInterrupt:
        print("zoo: interrupted", file=err())
        return 130


def _private_stderr() -> None:
    """Gives our messages, progress and tracebacks a stderr of their own, and sends everything else
    written to stderr to /dev/null: when a damaged checkpoint fails to read, TensorStore's threads
    print tracebacks of Orbax's closed event loop at any moment, racing our one-line message.
    ZOO_DEBUG=1 keeps the ordinary stderr."""
    global _STDERR
    import faulthandler
    import traceback

    if os.environ.get("ZOO_DEBUG"):
        return
    _STDERR = os.fdopen(os.dup(2), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = open(os.devnull, "w")
    faulthandler.enable(file=_STDERR)
    sys.excepthook = lambda kind, value, tb: traceback.print_exception(kind, value, tb, file=_STDERR)


def run() -> None:
    """The console script. After a refusal, exit at once: Orbax's background threads may still be
    unwinding a failed read, and interpreter teardown would wait for them."""
    _private_stderr()
    code = main()
    if code:
        sys.stdout.flush(), err().flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
