"""The ``flowforge`` command (also ``python -m flowforge``): train, sample, eval, presets.

    flowforge train                                  # the default preset, toy2d_fm
    flowforge train toy2d_cond --train.steps=2000    # a preset with dotted overrides
    flowforge train runs/toy2d_fm --train.steps=6000 # resume a run and train it further
    flowforge sample runs/toy2d_fm --n 64 --solver heun --nfe 8 --out samples.png
    flowforge eval runs/toy2d_fm                     # metrics at several NFEs vs the floor
    flowforge eval runs/digits --sample.guidance=2 --sample.guidance_method=raag
    flowforge presets                                # the bundled presets
    flowforge recipes                                # the methods and their method.* keys

User errors (bad config, missing run, malformed data file, unwritable output) print one message
on stderr and exit with status 2; ``--traceback`` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Sequence

from flowforge.recipes.errors import ConfigError
from flowforge.recipes.presets import list_presets

# The config, the recipes and torch load only for the commands that need them (train, sample,
# eval, recipes): `flowforge --help` and `flowforge presets` start at once.
HEAVY_COMMANDS = ("train", "sample", "eval")

__all__ = ["main", "build_parser"]

DEFAULT_PRESET = "toy2d_fm"


class _Parser(argparse.ArgumentParser):
    """Argument errors in one line, like every other user error (exit status 2)."""

    def error(self, message: str) -> typing.NoReturn:
        if "expected one argument" in message:
            option = message.split()[1].rstrip(":")
            message += f"; write {option}=VALUE (e.g. --train.steps=2000)"
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`.\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults (except None, whose help says where the value comes from)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def _type_label(tp: object, choices=None) -> str:
    if choices is not None:
        return "{" + ",".join(choices()) + "}"
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "{" + ",".join(str(a) for a in typing.get_args(tp)) + "}"
    if origin is list:
        return "LIST"
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if args:
        return _type_label(args[0])
    return getattr(tp, "__name__", "VALUE").upper()


def _add_override_options(
    parser: argparse.ArgumentParser, sections: tuple[str, ...] | None = None
) -> None:
    if sections is None:
        about = (
            "Every key of the run config, as --section.key=VALUE. Defaults shown are the "
            "built-in ones; a preset sets some of them (see `flowforge presets` and its YAML "
            "file). method.name picks the recipe; each recipe has its own method.* keys "
            "(`flowforge recipes`). Lists are written 1,2,4 or [1,2,4]; null clears an optional "
            "value."
        )
    else:
        about = (
            f"The run's {' and '.join(s + '.*' for s in sections)} settings, as "
            "--section.key=VALUE (defaults: the run's config.yaml)."
        )
    from flowforge.recipes.config_io import config_keys

    group = parser.add_argument_group("config overrides", about)
    for key, tp, default, text, choices in config_keys():
        if sections is not None and key.split(".")[0] not in sections:
            continue
        shown = "null" if default is None else default
        text = text.replace("%", "%%")  # argparse formats help strings with %
        group.add_argument(
            f"--{key}",
            dest=f"override:{key}",
            metavar=_type_label(tp, choices),
            default=argparse.SUPPRESS,
            help=f"{text} (default: {shown})" if sections is None else text,
        )


def _solvers(full: bool) -> list[str]:
    if not full:
        return ["SOLVER"]
    from flowforge.recipes.table import all_solvers

    return all_solvers()


def build_parser(full: bool = True) -> argparse.ArgumentParser:
    """The argument parser of the ``flowforge`` command.

    ``full=False`` leaves out the config overrides of ``train``, ``sample`` and ``eval`` (they
    need the recipes, and with them torch): enough for ``--help`` and ``presets``.
    """
    parser = _Parser(
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
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )

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
    if full:
        _add_override_options(p)
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "sample",
        help="draw samples from a trained run into a .npy, a .png or a folder of PNGs",
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
        metavar="{" + ",".join(_solvers(full)) + "}",
        help="ODE solver, or a recipe's own sampler (fewstep: the few-step methods') "
        "(default: sample.solver)",
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
        help="output: .npy (an array of shape (n, D) in data units, or (n, C, H, W) images in "
        "[0, 1]), .png (a scatter beside the data, or a grid of images), or a folder ending in "
        "/ (one PNG per image) (default: <run>/sample.npy)",
    )
    if full:
        _add_override_options(p, ("sample",))
    p.set_defaults(func=_sample)

    p = sub.add_parser(
        "eval",
        help="metrics at several NFEs beside their finite-sample floors",
        description="Evaluate a trained run: W2, sliced W2, MMD and energy distance against "
        "fresh data (images: FD, precision/recall and accuracy in a classifier's features) at "
        "several NFEs per solver, each next to its finite-sample floor. Writes metrics.json "
        "and quality_vs_nfe.png into the run directory. Options left out take the run's eval.* "
        "settings.",
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
        metavar="SOLVER",
        help="solvers to compare: " + ", ".join(_solvers(full)) + " (dopri5 spends what it "
        "needs; fewstep is the few-step methods' own sampler) (default: eval.solvers)",
    )
    p.add_argument(
        "--n-samples", type=int, default=None, help="samples per point (default: eval.n_samples)"
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (default: eval.seed)")
    p.add_argument("--which", choices=["ema", "model"], default="ema", help="weights to evaluate")
    if full:
        _add_override_options(p, ("sample", "eval"))
    p.set_defaults(func=_eval)

    p = sub.add_parser(
        "presets",
        help="list the bundled presets",
        description="List the bundled presets with a one-line description each.",
        formatter_class=_Formatter,
    )
    p.set_defaults(func=_presets)

    p = sub.add_parser(
        "recipes",
        help="list the methods (method.name) with their samplers and method.* keys",
        description="List every recipe: the method.name that picks it, what it trains on, its "
        "samplers and the keys of its method: section with their defaults.",
        formatter_class=_Formatter,
    )
    p.set_defaults(func=_recipes)
    return parser


def _overrides(args: argparse.Namespace, rest: list[str]) -> list[str]:
    """Dotted overrides: the registered ones, then those argparse left over (``rest``)."""
    given = [
        f"{k.split(':', 1)[1]}={v}" for k, v in vars(args).items() if k.startswith("override:")
    ]
    return given + rest


def _train(args: argparse.Namespace, rest: list[str]) -> int:
    from flowforge.cli import train_command  # plotting and metrics load only when needed
    from flowforge.recipes.config_io import apply_overrides

    config, run_dir = train_command.resolve_train(args.source, args.out_dir)
    config = apply_overrides(config, _overrides(args, rest))
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
        overrides=_overrides(args, rest),
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
        overrides=_overrides(args, rest),
    )
    return 0


def _presets(args: argparse.Namespace, rest: list[str]) -> int:
    presets = list_presets()
    width = max(len(name) for name in presets)
    for name, text in presets.items():
        mark = " (default)" if name == DEFAULT_PRESET else ""
        print(f"{name:<{width}}  {text}{mark}")
    return 0


def _recipes(args: argparse.Namespace, rest: list[str]) -> int:
    import dataclasses

    from flowforge.recipes.table import RECIPES

    for name, recipe in RECIPES.items():
        summary = (recipe.__doc__ or "").strip().splitlines()[0]
        samples = ", ".join(recipe.solvers) if recipe.samples else "does not sample"
        print(f"{name}: {summary}")
        print(f"    trains on {' and '.join(recipe.data_kinds)}; samplers: {samples}")
        defaults = recipe.Config()
        keys = [
            f"{f.name}={getattr(defaults, f.name)!r}"
            for f in dataclasses.fields(recipe.Config)
            if f.name != "name"
        ]
        print(f"    method.*: {', '.join(keys) if keys else '(none)'}")
    return 0


def _check_rest(command: str, rest: list[str]) -> None:
    """Leftover arguments must be dotted overrides (``--section.key=VALUE``)."""
    for item in rest:
        if command in HEAVY_COMMANDS and item.startswith("--") and "." in item:
            if "=" not in item:
                raise ConfigError(
                    f"override {item!r} has no value; write it as {item}=VALUE (e.g. "
                    "--train.steps=2000)."
                )
            continue
        raise ConfigError(
            f"unrecognised argument {item!r} for `flowforge {command}`; see "
            f"`flowforge {command} --help`."
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 success, 2 user error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(full=command in HEAVY_COMMANDS)
    args, rest = parser.parse_known_args(argv)
    try:
        _check_rest(args.command, rest)
        return args.func(args, rest)
    except (ValueError, TypeError, OSError, ImportError) as e:  # ImportError: a missing extra
        if args.traceback:
            raise
        print(f"flowforge {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"flowforge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
