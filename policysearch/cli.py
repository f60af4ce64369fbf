"""The ``policysearch`` console script.

Every subcommand is one :class:`Command` entry in :data:`COMMANDS` (name, help, a function adding its
arguments, a function running it). A command in its own module (``search``, ``benchmark``) is named with
:func:`from_module` and imported only when used, and nothing heavy is imported at the top, so
``policysearch --help`` stays fast and works without Ray. User errors (``PolicyError``, ``DataError``,
``SpaceError``, ``ValueError``) print as one line, ``policysearch: error: <message>``, exit status 2,
or 1 where an input file is invalid (as ``validate`` reports it); anything else is a bug and raises with
its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import select
import shlex
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NoReturn, Sequence

from policysearch import __version__
from policysearch.arguments import whole_number
from policysearch.augment.grids import CELL_TARGET, GRID_SAMPLES, GRID_VIEWS  # a constant; the module imports Pillow and torch only when drawing
from policysearch.wording import counted, one_line as _one_line

if TYPE_CHECKING:  # annotations only: help must not import torch
    from policysearch.augment.policy import Policy
    from policysearch.training.data import ImageData

PROG = "policysearch"
EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
SHOW_MAX_PIXELS = 50_000_000  # a larger grid (about 150 MB in memory, more while drawn) is a mistaken option
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a tool whose reader went away
# The policy strings of policysearch.augment.standard, for help texts (kept here: help must not import torch).
POLICY_STRINGS = ("randaugment:n=2,m=9[,bins=31], trivialaugment, trivialaugmentwide[:max=0.5], "
                  "autoaugment:cifar10|imagenet|svhn, torchvision:randaugment|trivialaugmentwide, identity")

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    """One subcommand: ``policysearch NAME ...``."""

    name: str
    help: str  # one line, shown in ``policysearch --help``
    description: str  # shown at the top of ``policysearch NAME --help``
    epilog: str  # examples, shown at the bottom
    add_arguments: AddArguments
    run: Run


def from_module(module: str, attribute: str) -> Callable:
    """A function that imports ``module`` on first call and calls its ``attribute`` (lazy subcommands).

    For a command in its own module, e.g. ``policysearch/search/command.py`` exposing
    ``add_arguments(parser)`` and ``run(args) -> int``::

        Command("search", "...", "...", "...",
                from_module("policysearch.search.command", "add_arguments"),
                from_module("policysearch.search.command", "run"))

    The parser calls ``add_arguments`` only for the subcommand being run (or for all of them when
    :func:`build_parser` is asked for the full parser), so keep heavy imports (Ray) inside ``run``.
    """

    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), attribute)(*args, **kwargs)

    call.__name__ = call.__qualname__ = f"{module}.{attribute}"
    return call


class UserError(ValueError):
    """A problem with the command line that argparse cannot see (e.g. two options that conflict)."""


# ---------------------------------------------------------------------------------------------------
# validate
# ---------------------------------------------------------------------------------------------------


def _add_validate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="policy JSON files (or policy strings such as randaugment:n=2,m=9) to check")


def _subs(n: int) -> str:
    return counted(n, "sub-policy", "sub-policies")


def _ops_list(policy) -> str:
    """Op names in order of first use."""
    seen: dict[str, None] = {}
    for sub in policy:
        for step in sub:
            seen.setdefault(step.op, None)
    return ", ".join(seen)


def _run_validate(args: argparse.Namespace) -> int:
    from policysearch.augment.policy import PolicyError
    from policysearch.augment.standard import load_policy

    status = EXIT_OK
    for file in args.files:
        try:
            policy = load_policy(file)
        except PolicyError as exc:  # already "FILE: place: what is wrong"
            print(_one_line(exc), file=sys.stderr)
            status = EXIT_INVALID
            continue
        ranges = "" if policy.ranges == "standard" else f"; op ranges: {policy.ranges}"
        print(f"{file}: ok ({_subs(len(policy))}, ops: {_ops_list(policy)}{ranges}; "
              f"baseline: {policy.baseline.describe()})")
    return status


def _invalid_file(exc: Exception) -> int:
    """Report an invalid input file as ``main`` reports an error, with ``validate``'s exit status."""
    print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
    return EXIT_INVALID


# ---------------------------------------------------------------------------------------------------
# convert
# ---------------------------------------------------------------------------------------------------


def _add_convert(parser: argparse.ArgumentParser) -> None:
    from_choices = ("autoaugment", "fast-autoaugment")  # the keys of convert.CONVERTERS
    parser.add_argument("source", metavar="SOURCE",
                        help=f"a policy string ({POLICY_STRINGS}; torchvision:cifar10 too), or a JSON file "
                             "in the form --from names")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="policy file to write (JSON; a missing folder is made); '-' writes it to standard output")
    parser.add_argument("--from", dest="form", choices=from_choices,
                        help="the form of a JSON SOURCE: 'autoaugment' = [[[name, prob, magnitude 0..10], ...], "
                             "...] as in the AutoAugment paper; 'fast-autoaugment' = [[[name, prob, level 0..1], "
                             "...], ...] as Fast AutoAugment's published policies")


def _run_convert(args: argparse.Namespace) -> int:
    from policysearch.atomic import unwritable, write_text_atomic
    from policysearch.augment.convert import ConvertUsageError, convert
    from policysearch.augment.policy import Policy, PolicyError
    from policysearch.augment.standard import is_policy_string

    if not args.output.strip():
        raise UserError("-o is empty; give the policy file to write, or - for standard output")
    if args.output == "-" and sys.stdout is None:
        raise UserError("-o -: standard output is closed; give the policy file to write")
    problem = unwritable(args.output) if args.output != "-" else None
    if problem is not None:
        raise UserError(f"-o {args.output}: {problem}")
    try:
        policy = convert(args.source, args.form)
    except PolicyError as exc:
        if isinstance(exc, ConvertUsageError) or is_policy_string(args.source):
            raise  # a bad policy string, --from with one, a file without --from, our own file: usage errors
        return _invalid_file(exc)  # a file that cannot be read or converted, --from or not
    if not policy.name:
        policy.name = Path(args.source).stem
    policy.metadata.setdefault("command", shlex.join([PROG, *args.argv]))
    text = policy.file_text()
    saved = Policy.from_dict(json.loads(text))  # what is written reads back and validates
    if args.output == "-":  # the JSON alone on standard output; the summary goes to standard error
        sys.stdout.write(text)
        out, summary = "standard output", sys.stderr
    else:
        out, summary = write_text_atomic(args.output, text), sys.stdout
    print(f"wrote {out}: {_subs(len(saved))} converted from {policy.metadata.get('source', args.source)}",
          file=summary)
    print(f"ops: {_ops_list(saved)}", file=summary)
    print(textwrap.indent(saved.describe(limit=5), "  "), file=summary)
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------
# show
# ---------------------------------------------------------------------------------------------------

DEFAULT_SHOW_POLICY = "torchvision:cifar10"


def _positive(text: str) -> int:
    value = whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seed(text: str) -> int:
    from policysearch.training.randomness import MAX_SEED

    value = whole_number(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be from 0 to {MAX_SEED}, got {value}")
    return value


def _add_show(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", metavar="POLICY",
                        help=f"policy JSON file or policy string ({POLICY_STRINGS}); without it, "
                             f"torchvision's AutoAugment CIFAR-10 policy ({DEFAULT_SHOW_POLICY}) is shown")
    parser.add_argument("--dataset", default=None,
                        help="data set to draw samples from: digits, cifar10, cifar100, svhn or an image folder "
                             "(PATH or imagefolder:PATH; default: the data set a searched policy names, else digits)")
    parser.add_argument("--data-root", default=None,
                        help="folder holding downloaded data sets (default: a searched policy's, else data)")
    parser.add_argument("--download", action="store_true",
                        help="download a torchvision data set (cifar10, cifar100, svhn) into the data root if missing")
    parser.add_argument("-o", "--output", default="grid.png",
                        help="PNG file to write, its name ending in .png; a missing folder is made (default: grid.png)")
    parser.add_argument("--samples", type=_positive, default=GRID_SAMPLES,
                        help=f"rows: samples of the data set (default: {GRID_SAMPLES}, as a search's grid.png)")
    parser.add_argument("--views", type=_positive, default=GRID_VIEWS,
                        help=f"augmented views per sample (default: {GRID_VIEWS}, as a search's grid.png)")
    parser.add_argument("--seed", type=_seed, default=0, help="seed for the samples and the augmentation (default: 0)")
    parser.add_argument("--scale", type=_positive, default=None,
                        help=f"upscaling factor (nearest neighbour); default: about {CELL_TARGET} px per image")
    parser.add_argument("--backend", choices=("batch", "pil"), default="batch",
                        help="apply the policy with BatchPolicyTransform on the whole batch (default) or with "
                             "PolicyTransform on PIL images one at a time (the reference path)")


def _show_data(args: argparse.Namespace, policy: Policy) -> ImageData:
    """The images ``show`` draws: ``--dataset``, else those a searched policy's run read (from its data root,
    at the side it searched at, in whose pixels its crop is), else digits; a searched data set that cannot be
    read here falls back to digits, with a line that says so."""
    from policysearch.training.data import DATA_ROOT, DataError, dataset_name, load_dataset

    search = policy.metadata.get("search")
    searched_on = search.get("dataset") if isinstance(search, dict) and "run_id" in policy.metadata else None
    if isinstance(searched_on, str) and searched_on.startswith("python:") and args.dataset is None:
        print("the policy was searched on data given in Python, which show cannot read; showing digits instead "
              "(--dataset to choose, e.g. imagefolder:PATH)")
    if args.dataset is not None or not isinstance(searched_on, str) or searched_on.startswith("python:"):
        return load_dataset(dataset_name("digits" if args.dataset is None else args.dataset), split="train",
                            data_root=args.data_root or DATA_ROOT, download=args.download)
    stored = search.get("data_root")  # a hand-edited file may hold anything there
    root = args.data_root or (stored if isinstance(stored, str) and stored else DATA_ROOT)
    name, side = dataset_name(searched_on), _searched_side(policy)
    fixed = name in ("cifar10", "cifar100", "svhn")  # stored at one size: only the samples drawn are resized
    try:  # the others are resized from their originals, once, as the search resized them
        data = load_dataset(name, split="train", data_root=root, download=args.download,
                            image_size=None if fixed else side)
        return _drawn_at(data, side, args) if fixed and side is not None else data
    except DataError as exc:
        print(f"the policy's data set cannot be read here ({exc}); showing digits instead (--dataset to choose)")
        return load_dataset("digits", split="train")


def _searched_side(policy: Policy) -> int | None:
    """The side a searched policy's images had (policy.json's metadata.image_size), in whose pixels its crop is;
    None when absent (a file written before it was recorded) or not a side (a hand-edited file)."""
    from policysearch.training.data import MAX_IMAGE_SIZE

    side = policy.metadata.get("image_size")
    return side if isinstance(side, int) and not isinstance(side, bool) and 1 <= side <= MAX_IMAGE_SIZE else None


def _drawn_at(data: ImageData, side: int, args: argparse.Namespace) -> ImageData:
    """The samples ``show`` draws from ``data``, resized to ``side``: the images and the order in which
    ``sample_grid`` draws them from ``data`` with ``--seed`` (its draw over these lands on that order)."""
    import torch

    from policysearch.training.data import ImageData, resize_images

    if side == data.images.shape[-1] or len(data) == 0:
        return data
    picks = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed))[:args.samples]
    order = torch.randperm(len(picks), generator=torch.Generator().manual_seed(args.seed))
    kept = torch.empty_like(picks)
    kept[order] = picks
    note = (f"{data.name}: the {len(kept)} images shown resized to {side}x{side}, the side the policy was "
            "searched at (its crop is in those pixels)")
    return ImageData(resize_images(data.images[kept], side), data.labels[kept], data.classes, data.name,
                     (*data.notes, note))


def _run_show(args: argparse.Namespace) -> int:
    from policysearch.atomic import unwritable, write_atomic
    from policysearch.augment.torchvision_policies import from_torchvision
    from policysearch.augment.grids import grid_scale, sample_grid
    from policysearch.augment.policy import PolicyError
    from policysearch.augment.standard import is_policy_string, load_policy

    output = Path(args.output)
    if not args.output.strip():
        raise UserError("-o is empty; give the PNG file to write, e.g. grid.png")
    if args.output.endswith(("/", os.sep)) or output.is_dir():
        raise UserError(f"-o {args.output}: a folder; give the PNG file to write, e.g. {output / 'grid.png'}")
    if output.suffix.lower() != ".png":
        raise UserError(f"-o {args.output}: show writes a PNG; give a name ending in .png")
    problem = unwritable(output)  # before the data are read
    if problem is not None:
        raise UserError(f"-o {args.output}: {problem}")
    if args.file is None:
        policy = from_torchvision(DEFAULT_SHOW_POLICY)
        about = f"{DEFAULT_SHOW_POLICY} (default: no policy file given)"
    else:
        try:
            policy = load_policy(args.file)
        except PolicyError as exc:
            if is_policy_string(args.file):
                raise  # a bad policy string: a usage error
            return _invalid_file(exc)
        about = policy.name or Path(args.file).name
    data = _show_data(args, policy)
    for note in data.notes:  # what loading changed or skipped, as the search says it
        print(f"data: {note}")
    if len(data) == 0:
        raise UserError(f"{data.name} has no images to show")
    height, width = (int(side) for side in data.images.shape[-2:])
    scale = grid_scale(height, width, args.scale)
    rows = min(args.samples, len(data))  # as sample_grid draws them
    pixels = rows * (args.views + 1) * height * width * scale ** 2
    if pixels > SHOW_MAX_PIXELS:
        raise UserError(f"the grid would have about {pixels / 1e6:,.0f} million pixels ({rows} samples x "
                        f"{args.views + 1} images of {width * scale}x{height * scale} px), more than "
                        f"{SHOW_MAX_PIXELS // 1_000_000} million; lower --scale, --samples or --views")
    canvas, samples, _ = sample_grid(policy, data, about=about, samples=args.samples, views=args.views,
                                     seed=args.seed, backend=args.backend, scale=scale)
    out = write_atomic(args.output, lambda handle: canvas.save(handle, format="PNG"))
    print(f"wrote {out} ({canvas.width}x{canvas.height} px: {samples} {'sample' if samples == 1 else 'samples'} of "
          f"{data.name}, "
          f"{args.views} {'view' if args.views == 1 else 'views'} each, {about})")
    return EXIT_OK


def _run_report(args: argparse.Namespace) -> int:
    """``policysearch report``: a run folder whose files are missing or invalid is an invalid input file."""
    from policysearch.augment.policy import PolicyError
    from policysearch.search import figures

    try:
        return figures.run(args)
    except (figures.RunFilesError, PolicyError) as exc:
        return _invalid_file(exc)


# ---------------------------------------------------------------------------------------------------
# spaces
# ---------------------------------------------------------------------------------------------------


def _add_spaces(parser: argparse.ArgumentParser) -> None:
    del parser  # no arguments


def _run_spaces(args: argparse.Namespace) -> int:
    from policysearch.search.spaces import list_spaces, load_space

    names = list_spaces()
    width = max(map(len, names), default=0)
    for name in names:
        space = load_space(name)
        first = (space.description.strip().splitlines() or [""])[0]
        shape = f"{len(space.ops)} ops, {space.sub_policies}x{space.ops_per_sub_policy}"
        print(f"{name:<{width}}  [{shape}]  {first}")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------

COMMANDS: list[Command] = [
    Command(
        "validate", "check policy files",
        "Check policy JSON files against the policy format: every op known, every probability and level in "
        "[0, 1], no unknown keys. Prints one line per good file; a bad file's problem goes to stderr with "
        "its place in the file, and the exit status is 1.",
        "examples:\n  policysearch validate policy.json\n  policysearch validate runs/*/policy.json",
        _add_validate, _run_validate,
    ),
    Command(
        "convert", "convert a policy from torchvision, the AutoAugment paper or Fast AutoAugment",
        "Convert another project's augmentation policy into a policysearch policy file. The levels are "
        "chosen so that each op applies the same argument as in the source (see policysearch.augment.convert).",
        "examples:\n"
        "  policysearch convert torchvision:cifar10 -o cifar10.json\n"
        "  policysearch convert randaugment:n=2,m=9 -o randaugment.json\n"
        "  policysearch convert paper_policy.json --from autoaugment -o policy.json\n"
        "  policysearch convert faa_policy.json --from fast-autoaugment -o policy.json",
        _add_convert, _run_convert,
    ),
    Command(
        "show", "draw a grid of augmented samples as a PNG",
        "Draw a PNG grid: each row is one sample of a data set, the first column the original image, the "
        "others augmented views through the policy (a file or a policy string). Without POLICY, "
        "torchvision's AutoAugment CIFAR-10 policy is shown.",
        "examples:\n"
        "  policysearch show --dataset digits\n"
        "  policysearch show trivialaugment --dataset digits -o trivial.png\n"
        "  policysearch show policy.json --dataset digits -o out/grid.png --samples 10 --views 8\n"
        "  policysearch show policy.json --dataset cifar10 --data-root data --scale 3",
        _add_show, _run_show,
    ),
    Command(
        "spaces", "list the shipped search spaces",
        "List the search spaces shipped with policysearch, with the first line of their description. Give "
        "one by name to the search, or write your own YAML file in the same format.",
        "example:\n  policysearch spaces",
        _add_spaces, _run_spaces,
    ),
    Command(
        "search", "search an augmentation policy (Fast AutoAugment on Ray Tune)",
        "Train child models on K splits of the training data, score candidate policies on the held-out part "
        "with the frozen child models (density matching), let a Bayesian optimiser propose them, and write "
        "the merged best sub-policies to RUN_DIR/policy.json with report.md and trials.csv. With no "
        "arguments it searches the embedded digits data on this machine in a few minutes.",
        "examples:\n"
        "  policysearch search\n"
        "  policysearch search --dataset cifar10 --train-size 4000 --model wrn40_2 --epochs 200 \\\n"
        "      --space fast_autoaugment --trials 200 --gpus-per-trial 0.25 --out runs/rc10\n"
        "  policysearch search --resume runs/rc10\n"
        "  policysearch search --address HEAD_IP:6379 --storage /shared/policysearch",
        from_module("policysearch.search.command", "add_arguments"),
        from_module("policysearch.search.command", "run"),
    ),
    Command(
        "report", "draw a finished search's pictures again and put them into its report.md",
        "Draw the pictures of a finished search (RUN_DIR with policy.json) from the run's files: the score of "
        "every policy trial per split (trials.png), the candidate recipes against the reference with the "
        "selection rule's one-sided bounds "
        "(recipes.png), the chosen policy's ops and levels (ops.png) and training images under the chosen "
        "recipe (grid.png, from the run's data set). Only the pictures section of report.md is rewritten; "
        "the rest of it stays as the search wrote it, since it needs results the run's files do not keep "
        "(a report.md without a pictures section gets one after its summary).",
        "examples:\n  policysearch report runs/demo\n  policysearch report runs/rc10 --data-root /data",
        from_module("policysearch.search.figures", "add_arguments"),
        _run_report,
    ),
    Command(
        "benchmark", "compare a searched policy with no augmentation, Cutout, AutoAugment, RandAugment, TrivialAugment",
        "Train the same model on the same data, epochs and seeds under each augmentation and report the test "
        "error per method (mean, std, paired difference to the searched policy with a 95% interval), as "
        "results.md, results.json, runs.csv and errors.png. The searched policy comes from --policy FILE or "
        "from a search run first on the same training images (never the test split).",
        "examples:\n"
        "  policysearch benchmark --preset digits-small\n"
        "  policysearch benchmark --preset digits-small --policy runs/demo/policy.json --seeds 0 1 2 3 4\n"
        "  policysearch benchmark --preset reduced-cifar10-wrn40-2 --data-root data --device cuda",
        from_module("policysearch.benchmark.command", "add_arguments"),
        from_module("policysearch.benchmark.command", "run"),
    ),
]


class _Parser(argparse.ArgumentParser):
    """argparse's parser with a one-line usage error: the error and where the options are listed, rather
    than a usage block of every option (the search's and the benchmark's run to 20 lines) above it."""

    help_prog: str | None = None  # the subcommand, for its options that the root parser reports as unknown

    def error(self, message: str) -> NoReturn:
        prog = self.help_prog or self.prog
        self.exit(EXIT_USAGE, f"{prog}: error: {message}; see {prog} --help\n")


def build_parser(only: str | None = None, commands: Sequence[Command] | None = None) -> argparse.ArgumentParser:
    """The argument parser. With ``only``, only that subcommand's arguments are added (the others keep
    their help line), so an unused command's module is never imported; without it, all of them."""
    commands = COMMANDS if commands is None else commands
    parser = _Parser(
        prog=PROG,
        description=_wrap("Search augmentation policies for small labelled image data sets, and check, "
                          "convert and look at policy files."),
        epilog="examples:\n  policysearch show --dataset digits\n  policysearch validate policy.json\n"
               f"  policysearch COMMAND --help\n\nversion {__version__}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for command in commands:
        child = sub.add_parser(command.name, help=command.help, description=_wrap(command.description),
                               epilog=command.epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
        if only is None or only == command.name:
            command.add_arguments(child)
        child.set_defaults(_command=command)
    if only:  # an unknown option is reported by this parser, after the subcommand's took what it knows
        parser.help_prog = f"{PROG} {only}"
    return parser


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=88)


def _selected(argv: Sequence[str], commands: Sequence[Command]) -> str | None:
    """The subcommand named on the command line: the first argument that is not an option."""
    names = {c.name for c in commands}
    for arg in argv:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg if arg in names else None
    return None


def _stdout_gone() -> bool:
    """Whether standard output is a pipe whose reader has gone (poll reports an error on it)."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # replaced by an object without a descriptor (a test's capture, a notebook)
        return False
    if not hasattr(select, "poll"):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the console script; returns the exit status (0 ok, 1 invalid input file, 2 usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:  # building a command's parser imports its modules (torch): seconds in which a Ctrl-C may come
        parser = build_parser(only=_selected(argv, COMMANDS) or "")
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and argparse's own errors
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted before it started; nothing was written", file=sys.stderr)
        return 130
    command: Command | None = getattr(args, "_command", None)
    if command is None:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: choose a command ({', '.join(c.name for c in COMMANDS)}); "
              f"see {PROG} --help", file=sys.stderr)
        return EXIT_USAGE
    args.argv = argv  # the command line, for provenance (e.g. a converted policy's metadata)
    try:
        return int(command.run(args))
    except ValueError as exc:  # PolicyError, DataError, SpaceError, UserError and bad values
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError as exc:
        if not _stdout_gone():  # another pipe (a subprocess's, a socket): an error like any other
            print(f"{PROG}: error: {exc.strerror or _one_line(exc)}", file=sys.stderr)
            return EXIT_USAGE
        devnull = os.open(os.devnull, os.O_WRONLY)  # the reader of the output went away (``| head``): stop
        os.dup2(devnull, sys.stdout.fileno())  # quietly, as other tools do; the last flush has nowhere to fail
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    except OSError as exc:  # e.g. the output folder cannot be written
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"{PROG}: error: {where}{exc.strerror or _one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
