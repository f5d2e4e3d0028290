"""The ``flowforge`` command (also ``python -m flowforge``): train, sample, eval, presets.

    flowforge train                                  # the default preset, toy2d_fm
    flowforge train toy2d_cond --train.steps=2000    # a preset with dotted overrides
    flowforge train runs/toy2d_fm --train.steps=6000 # resume a run and train it further
    flowforge sample runs/toy2d_fm --n 64 --solver heun --nfe 8 --out samples.png
    flowforge eval runs/toy2d_fm                     # metrics at several NFEs vs the floor
    flowforge presets

User errors (bad config, missing run, malformed data file, unwritable output) print one message
on stderr and exit with status 2; ``--traceback`` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Sequence

from flowforge.cli.config import (
    ConfigError,
    RunConfig,
)
from flowforge.cli.config_io import (
    apply_overrides,
    config_keys,
    list_presets,
)

__all__ = ["main", "build_parser"]

DEFAULT_PRESET = "toy2d_fm"


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults (except None, whose help says where the value comes from)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def _type_label(tp: object) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "{" + ",".join(str(a) for a in typing.get_args(tp)) + "}"
    if origin is list:
        return "LIST"
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if args:
        return _type_label(args[0])
    return getattr(tp, "__name__", "VALUE").upper()


def _add_override_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "config overrides",
        "Every key of the run config, as --section.key=VALUE. Defaults shown are the built-in "
        "ones; a preset sets some of them (see `flowforge presets` and its YAML file). Lists are "
        "written 1,2,4 or [1,2,4]; null clears an optional value.",
    )
    for key, tp, default, text in config_keys():
        shown = "null" if default is None else default
        group.add_argument(
            f"--{key}",
            dest=f"override:{key}",
            metavar=_type_label(tp),
            default=argparse.SUPPRESS,
            help=f"{text} (default: {shown})",
        )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``flowforge`` command."""
    parser = argparse.ArgumentParser(
        prog="flowforge",
        description="Train, sample and evaluate flow-matching models.",
        epilog=__doc__.split("\n\n")[1],
        formatter_class=_Formatter,
        allow_abbrev=False,
    )
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="show the full Python traceback on errors instead of a one-line message",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "train",
        help="train a run (a preset, a YAML file, or resume a run directory)",
        usage="flowforge train [-h] [--out-dir OUT_DIR] [--no-eval] [source] "
        "[--section.key=VALUE ...]",
        description="Train a flow and write checkpoints, metrics and pictures to its run "
        "directory. Pointing at an existing run directory resumes it from its last checkpoint.",
        formatter_class=_Formatter,
        allow_abbrev=False,
    )
    p.add_argument(
        "source",
        nargs="?",
        default=DEFAULT_PRESET,
        help="a preset name (see `flowforge presets`), a .yaml config file, or an existing run "
        "directory to resume",
    )
    p.add_argument(
        "--out-dir",
        default=None,
        help="run directory to write (default: runs/<name>, or the run directory being resumed)",
    )
    p.add_argument(
        "--no-eval",
        action="store_true",
        help="skip the evaluation and pictures after training (checkpoints are still written)",
    )
    _add_override_options(p)
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "sample",
        help="draw samples from a trained run into a .npy or .png file",
        description="Draw samples from a trained run. Options left out take the run's "
        "sample.* settings from its config.yaml.",
        formatter_class=_Formatter,
        allow_abbrev=False,
    )
    p.add_argument("run", help="run directory written by `flowforge train`")
    p.add_argument("--n", type=int, default=None, help="number of samples (default: sample.n)")
    p.add_argument(
        "--solver",
        default=None,
        choices=["euler", "midpoint", "heun", "rk4", "dopri5", "fewstep"],
        help="ODE solver, or fewstep for a few-step method's own sampler (default: sample.solver)",
    )
    p.add_argument(
        "--nfe",
        type=int,
        default=None,
        help="network evaluations, a multiple of the solver's evaluations per step: euler 1, "
        "midpoint 2, heun 2, rk4 4; dopri5 is adaptive and ignores it (default: sample.nfe)",
    )
    p.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="guidance scale, conditional runs only; 1 is none (default: sample.guidance)",
    )
    p.add_argument(
        "--label",
        type=int,
        default=None,
        help="class of every sample in a conditional run (default: drawn with the data's class "
        "frequencies)",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (default: sample.seed)")
    p.add_argument(
        "--which", choices=["ema", "model"], default="ema", help="weights to sample from"
    )
    p.add_argument(
        "--out",
        default=None,
        help="output file: .npy (array of shape (n, D) in data units) or .png (scatter beside "
        "the data) (default: <run>/sample.npy)",
    )
    p.set_defaults(func=_sample)

    p = sub.add_parser(
        "eval",
        help="metrics at several NFEs beside their finite-sample floors",
        description="Evaluate a trained run: W2, sliced W2, MMD and energy distance against "
        "fresh data at several NFEs per solver, each next to its finite-sample floor (fresh data "
        "against fresh data). Writes metrics.json and quality_vs_nfe.png into the run directory. "
        "Options left out take the run's eval.* settings.",
        formatter_class=_Formatter,
        allow_abbrev=False,
    )
    p.add_argument("run", help="run directory written by `flowforge train`")
    p.add_argument(
        "--nfes", type=int, nargs="+", default=None, help="NFE budgets (default: eval.nfes)"
    )
    p.add_argument(
        "--solvers",
        nargs="+",
        default=None,
        choices=["euler", "midpoint", "heun", "rk4", "fewstep"],
        help="fixed-step solvers, or fewstep (few-step methods) (default: eval.solvers)",
    )
    p.add_argument(
        "--n-samples", type=int, default=None, help="samples per point (default: eval.n_samples)"
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (default: eval.seed)")
    p.add_argument("--which", choices=["ema", "model"], default="ema", help="weights to evaluate")
    p.set_defaults(func=_eval)

    p = sub.add_parser(
        "presets",
        help="list the bundled presets",
        description="List the bundled presets with a one-line description each.",
        formatter_class=_Formatter,
    )
    p.set_defaults(func=_presets)
    return parser


def _train(args: argparse.Namespace, rest: list[str]) -> int:
    from flowforge.cli import train_command  # plotting and metrics load only when needed

    overrides = [
        f"{k.split(':', 1)[1]}={v}" for k, v in vars(args).items() if k.startswith("override:")
    ]
    config, run_dir = train_command.resolve_train(args.source, args.out_dir)
    config = apply_overrides(config, overrides)
    train_command.train_command(config, run_dir, evaluate=not args.no_eval)
    return 0


def _sample(args: argparse.Namespace, rest: list[str]) -> int:
    from flowforge.cli import sample_command  # plotting and metrics load only when needed

    sample_command.sample_command(
        args.run,
        n=args.n,
        solver=args.solver,
        nfe=args.nfe,
        guidance=args.guidance,
        label=args.label,
        seed=args.seed,
        which=args.which,
        out=args.out,
    )
    return 0


def _eval(args: argparse.Namespace, rest: list[str]) -> int:
    from flowforge.cli import eval_command  # plotting and metrics load only when needed

    eval_command.eval_command(
        args.run,
        nfes=args.nfes,
        solvers=args.solvers,
        n_samples=args.n_samples,
        seed=args.seed,
        which=args.which,
    )
    return 0


def _presets(args: argparse.Namespace, rest: list[str]) -> int:
    presets = list_presets()
    width = max(len(name) for name in presets)
    for name, text in presets.items():
        mark = " (default)" if name == DEFAULT_PRESET else ""
        print(f"{name:<{width}}  {text}{mark}")
    return 0


def _check_rest(command: str, rest: list[str]) -> None:
    """Leftover arguments: unknown ``--section.key`` overrides get a suggestion."""
    if not rest:
        return
    first = rest[0]
    if command == "train" and first.startswith("--") and "." in first:
        apply_overrides_probe = first if "=" in first else f"{first}=0"
        apply_overrides(RunConfig(), [apply_overrides_probe])  # raises ConfigError
    raise ConfigError(
        f"unrecognised argument {first!r} for `flowforge {command}`; see "
        f"`flowforge {command} --help`."
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 success, 2 user error)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, rest = parser.parse_known_args(argv)
    try:
        _check_rest(args.command, rest)
        return args.func(args, rest)
    except (ValueError, TypeError, OSError) as e:
        if args.traceback:
            raise
        print(f"flowforge {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"flowforge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
