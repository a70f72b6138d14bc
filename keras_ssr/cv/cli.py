"""``keras-ssr cv``: the command line of the runner.

Every configuration flag is generated from the :class:`~keras_ssr.cv.CVConfig`
field it sets (:func:`keras_ssr.cv.config.setting`): ``--field-name`` plus
its declared aliases, its help text and its default, so that adding a field
adds its flag. Flags default to "not given", so that they override a
``--config`` file only when present.

    keras-ssr cv [--config FILE] [flags]    run or resume a run
    keras-ssr cv summarize RUN [--format F] aggregate the finished folds of RUN
    keras-ssr cv compare RUN_A RUN_B ...    paired t-tests of runs over their folds

``--attention-option KEY=VALUE`` (repeatable) sets one option of the
attention layer, the value read as a TOML literal (``k=8``,
``per_channel=true``, ``basis=dct``); ``--encoder-option`` and
``--decoder-attention-option`` those of the encoder and of the decoder's
attention; ``--import MODULE`` imports a module first, e.g. one registering
an attention of one's own.

Parsing (``--help``, a wrong flag) loads no backend: the runner and the
model are imported when a command runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from keras_ssr import _settings
from keras_ssr.cv import files, results, tables
from keras_ssr.cv.config import LEGACY_OPTIONS, PROTOCOLS, CVConfig
from keras_ssr.cv.fields import SECTIONS, choices_of, shown

__all__ = ["add_arguments", "config_from_args", "run_from_args"]


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _size(text: str) -> tuple[int, int]:
    values = _int_list(text)
    if len(values) == 1:
        values = values * 2
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected H,W or one size, got {text!r}")
    return values


def _optional(kind):
    def parse(text: str):
        if text.lower() in ("none", "null", ""):
            return None
        return kind(text)

    parse.__name__ = kind.__name__  # argparse names it in its error message
    return parse


def _names(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    if not names:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated names, got {text!r}"
        )
    return names


def _verbosity(text: str):
    if text == "auto":
        return text
    if text in ("0", "1", "2"):
        return int(text)
    raise argparse.ArgumentTypeError(f"expected 0, 1, 2 or auto, got {text!r}")


_PARSERS = {"int": int, "float": float, "ints": _int_list, "size": _size}


def _flag_options(field: dataclasses.Field) -> tuple[list[str], dict]:
    meta = field.metadata
    aliases = [f"--{alias.replace('_', '-')}" for alias in meta["aliases"]]
    names = [f"--{field.name.replace('_', '-')}", *meta["flags"], *aliases]
    options: dict = {"dest": field.name, "default": argparse.SUPPRESS}
    help_text = f"{meta['help']} (default {shown(field.default)})"
    if aliases:
        help_text += f"; {', '.join(aliases)}: its former name"
    options["help"] = help_text.replace("%", "%%")
    if meta["kind"] == "bool":
        options["action"] = argparse.BooleanOptionalAction
        return names, options
    if meta["kind"] == "options":
        help_text = f"{meta['help']}; repeatable, the value a TOML literal"
        options.update(
            action=_settings.SetOption,
            type=_settings.assignment,
            metavar=meta["metavar"],
        )
        options["help"] = help_text.replace("%", "%%")
        return names, options
    parser = _PARSERS.get(meta["kind"])
    if parser is not None:
        options["type"] = _optional(parser) if meta["optional"] else parser
    elif meta["optional"]:
        options["type"] = _optional(str)
    # Not for model names, which may register late (--import) and whose
    # listing would load Keras, nor where "none" (None) is a value:
    # CVConfig's check names the choices then.
    skip = field.name == "model" or meta["optional"]
    choices = None if skip else choices_of(field)
    if choices is not None:
        options["choices"] = choices
        if meta["renamed"]:  # former spellings: accepted, not advertised
            options["choices"] = (*choices, *meta["renamed"])
            options["metavar"] = "{" + ",".join(choices) + "}"
    if meta["metavar"]:
        options["metavar"] = meta["metavar"]
    return names, options


def _hint_stray_values(parser: argparse.ArgumentParser) -> None:
    """A value of an unknown flag (``--k 8``) reaches argparse as the
    sub-command; its error then says how options are set."""
    error = parser.error

    def explained(message: str):
        if message.startswith("argument {summarize,compare}: invalid choice"):
            message += (
                ". A value after an unknown flag? Options of the attention layer "
                "are set with --attention-option KEY=VALUE (e.g. k=8)"
            )
        error(message)

    parser.error = explained


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``cv`` options (and ``summarize``) to an ``argparse`` parser."""
    parser.description = (
        "K-fold cross-validation with the SSR paper's protocol. Settings come "
        "from --config FILE (TOML, YAML or JSON) and the flags below, which win "
        "over the file; unset ones take the paper's defaults. Rerunning into "
        "the same output folder resumes; several processes may run different "
        "--fold into one folder at once."
    )
    commands = parser.add_subparsers(dest="cv_command", metavar="{summarize,compare}")
    _hint_stray_values(parser)
    summary = commands.add_parser(
        "summarize",
        help="aggregate the finished folds of a run folder",
        description="Collects the finished folds of RUN into summary.csv and "
        "summary.json and prints their table: per fold (text) or, with "
        "--format markdown|latex|csv, one row of mean ± sample std over the "
        "folds, ready for a paper. Trains nothing.",
    )
    summary.add_argument("run_dir", metavar="RUN", help="the run's folder")
    comparison = commands.add_parser(
        "compare",
        help="compare runs fold by fold (paired t-tests)",
        description="One row per run, mean ± sample std over the folds; each "
        "run after the first is compared with it by a paired t-test "
        "(scipy.stats.ttest_rel) over the folds, per metric, and marked † "
        "for p <= 0.05, ‡ for p <= 0.01. The runs must hold the same folds "
        "(same data, dataset, folds, val_fraction, max_samples, held-out "
        "samples) and have finished the same ones. Needs SciPy "
        "(pip install keras-ssr[stats]).",
    )
    comparison.add_argument(
        "run_dirs",
        metavar="RUN",
        nargs="+",
        help="two or more run folders, the baseline first",
    )
    for sub in (summary, comparison):
        _settings.add_import_argument(sub)
        sub.add_argument(
            "--format",
            choices=tables.FORMATS,
            default="text",
            help="text (default), or the table as markdown, latex (a tabular) or csv",
        )
        sub.add_argument(
            "--columns",
            type=_names,
            metavar="NAME[,NAME...]",
            help="the metrics to tabulate, by their logged names (e.g. "
            "dice_score,binary_io_u); default every score but the loss "
            "(summarize: with markdown, latex or csv)",
        )
        sub.add_argument(
            "--traceback",
            action="store_true",
            help="show the full traceback of an error",
        )
    parser.add_argument(
        "--config", "-c", metavar="FILE", help="a .toml, .yaml/.yml or .json config"
    )
    parser.add_argument(
        "--protocol",
        choices=tuple(PROTOCOLS),
        help="a preset below the file and flags: paper (the SSR paper's, the "
        "defaults) or followup (the follow-up's: "
        + ", ".join(f"{k}={shown(v)}" for k, v in PROTOCOLS["followup"].items())
        + ")",
    )
    groups = {name: parser.add_argument_group(name) for name in SECTIONS}
    for field in dataclasses.fields(CVConfig):
        names, options = _flag_options(field)
        groups[field.metadata["section"]].add_argument(*names, **options)
    for key in LEGACY_OPTIONS:
        groups["model"].add_argument(
            f"--{key.replace('_', '-')}",
            dest=key,
            type=_settings.parse_value,
            default=argparse.SUPPRESS,
            metavar="N",
            help=f"deprecated: --attention-option {key}=N",
        )
    run = parser.add_argument_group("running")
    _settings.add_import_argument(run)
    run.add_argument(
        "--fold",
        dest="run_folds",
        type=_int_list,
        action="append",
        metavar="K[,K...]",
        help="run only these folds (0-based; repeatable); the summary covers "
        "every finished fold",
    )
    run.add_argument(
        "--overwrite",
        "--force",
        action="store_true",
        help="delete the run folder's previous results (needed when its saved "
        "configuration differs); refused while another process works there",
    )
    run.add_argument(
        "--verbose",
        type=_verbosity,
        default="auto",
        help="fit verbosity 0, 1 (bars), 2 (lines) or auto (1 on a terminal)",
    )
    run.add_argument(
        "--run-eagerly", action="store_true", help="no graph compilation (debugging)"
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="check the configuration and data, build the model, print the "
        "folds' sizes; write and train nothing",
    )
    run.add_argument(
        "--traceback",
        action="store_true",
        help="show the full traceback of an error instead of one line",
    )
    run.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved configuration as TOML and exit",
    )


def config_from_args(args: argparse.Namespace) -> CVConfig:
    """The configuration of parsed ``cv`` arguments: file, then flags."""
    names = [f.name for f in dataclasses.fields(CVConfig)] + list(LEGACY_OPTIONS)
    overrides = {name: getattr(args, name) for name in names if hasattr(args, name)}
    protocol = getattr(args, "protocol", None)
    if getattr(args, "config", None):
        return CVConfig.from_file(args.config, protocol=protocol, **overrides)
    return CVConfig.from_dict({}, protocol=protocol, **overrides)


def _dry_run(config: CVConfig) -> None:
    """Everything a run checks before it writes: config, data, splits, model."""
    import keras

    from keras_ssr.cv import build

    if config.dataset == "busi":
        x, _, labels = build.load_data(config, return_labels=True)
    else:
        (x, _), labels = build.load_data(config), None
    splits = build.splits(config, len(x), labels)
    model = build.build_model(config, x.shape[1:])
    parameters = model.count_params()
    keras.backend.clear_session()
    print(
        f"{len(x)} samples of shape {tuple(x.shape[1:])}; model {config.model}"
        + (f" on {config.encoder}" if config.encoder else "")
        + f" with {parameters:,} parameters; run folder '{config.run_dir}'"
    )
    for k, split in enumerate(splits):
        state = "finished" if results.finished(config.run_dir, k) else "to run"
        print(
            f"fold {k}: fit {len(split['fit'])}, validate {len(split['val'])}, "
            f"test {len(split['test'])} (indices {split['test'][0]}.."
            f"{split['test'][-1]}) - {state}"
        )


def _summarize(args: argparse.Namespace) -> None:
    if args.format == "text" and args.columns is not None:
        raise ValueError(
            "--columns chooses the columns of --format markdown, latex or csv; "
            "the text form is the per-fold table of every metric."
        )
    config = results.saved_config(args.run_dir)
    result = results.write_summary(config, args.run_dir)
    if args.format == "text":
        print(results.report(result))
        return
    print(tables.score_table([result], args.format, args.columns), end="")


def _compare(args: argparse.Namespace) -> None:
    comparison = tables.compare(args.run_dirs)
    print(comparison.table(args.format, args.columns), end="")


def run_from_args(args: argparse.Namespace) -> int:
    """Runs ``keras-ssr cv`` from parsed arguments; returns the exit status.

    A configuration, data or resume problem prints one line on standard
    error and returns 2 (``--traceback`` raises it instead); Ctrl-C returns
    130 with a hint on resuming.
    """
    commands = {"summarize": _summarize, "compare": _compare}
    try:
        _settings.import_modules(getattr(args, "imports", None))
        command = commands.get(getattr(args, "cv_command", None))
        if command is not None:
            command(args)
            return 0
        config = config_from_args(args)
        if args.print_config:
            print(files.config_to_toml(config), end="")
            return 0
        if args.dry_run:
            _dry_run(config)
            return 0
        folds = None
        if args.run_folds:
            folds = [k for chunk in args.run_folds for k in chunk]
        from keras_ssr.cv.runner import run_cv

        run_cv(
            config,
            folds=folds,
            overwrite=args.overwrite,
            verbose=args.verbose,
            run_eagerly=args.run_eagerly,
        )
    except (ValueError, TypeError, OSError, ImportError) as error:
        if args.traceback:
            raise
        print(f"keras-ssr cv: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\nkeras-ssr cv: interrupted. Run the same command again to resume: "
            "finished folds are kept, the interrupted one restarts.",
            file=sys.stderr,
        )
        return 130
    return 0
