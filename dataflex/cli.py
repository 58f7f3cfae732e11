"""``dataflex-cli``: train, select, export, list, version.

Every command validates its input before doing work; a :class:`ConfigError` is
printed as a one-paragraph message with exit code 1, bad usage exits 2, and a
traceback is shown only for genuine bugs.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence

from dataflex import __version__
from dataflex.errors import DataflexError

Handler = Callable[[argparse.Namespace], int]


def _cmd_version(args: argparse.Namespace) -> int:
    import torch
    import transformers

    print(f"dataflex {__version__} (torch {torch.__version__}, transformers {transformers.__version__})")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from dataflex.configs.yaml_files import split_names
    from dataflex.data.templates import TOKENIZER_TEMPLATE
    from dataflex.registry import PROJECTORS, SELECTORS, TEMPLATES
    from dataflex.train.config import import_plugins

    import_plugins([m for value in args.plugins for m in split_names(value)], "--")

    for title, registry in (("selectors", SELECTORS), ("projectors", PROJECTORS), ("templates", TEMPLATES)):
        if args.kind not in (None, title):
            continue
        rows = [(name, registry.summary(name)) for name in registry.names(args.pattern)]
        if registry is TEMPLATES and fnmatch.fnmatchcase(TOKENIZER_TEMPLATE, args.pattern or "*"):
            rows.insert(0, (TOKENIZER_TEMPLATE, "the tokenizer's own chat template (the default)"))
        print(f"{title}:")
        width = max((len(name) for name, _ in rows), default=0)
        for name, summary in rows:
            print(f"  {name:<{width}}  {summary}")
        if not rows:
            print("  (none)")
    return 0


def _setup_logging() -> None:
    """Install the `dataflex` logger's handler (``dataflex.logging_utils``); nothing else to set up."""
    from dataflex.logging_utils import configure_library_logger

    configure_library_logger()


def _cmd_train(args: argparse.Namespace) -> int:
    from dataflex.train.config import load_train_config
    from dataflex.train.preflight import check_run_inputs
    from dataflex.train.runner import check_output_dir, run_train

    _setup_logging()
    cfg = load_train_config(args.config, args.overrides)
    # every input problem in one message, here and not from each torchrun worker
    check_run_inputs(cfg, extra_checks=(check_output_dir,))
    from dataflex.launch import maybe_relaunch_with_torchrun

    # FORCE_TORCHRUN=1 (or several GPUs): rerun this command under torchrun once the config is valid
    code = maybe_relaunch_with_torchrun(["train", args.config, *args.overrides])
    if code is not None:
        return code
    result = run_train(cfg)
    _close_process_group()  # not on failure: a barrier there would wait on ranks that may be gone
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun, rank 0 prints the result once
    headline = (
        f"trained {result.global_step} steps (loss {result.training_loss:.4f}); saved to {result.output_dir}"
    )
    if cfg.train_type != "dynamic_select":
        print(headline)
        return 0
    from dataflex.train.dynamic.layout import report_dir
    from dataflex.train.dynamic.reports import run_summary

    pool = result.data_report["train"]
    summary = run_summary(
        report_dir(result.output_dir),
        result.log_history,
        headline=headline,
        pool_counts={"subtask": pool["by_subtask"], "dataset": pool["by_dataset"]},
        eval_name=", ".join(cfg.eval_dataset) if cfg.eval_dataset and cfg.eval_strategy != "no" else None,
    )
    print("\n".join(summary))
    return 0


def _close_process_group() -> None:
    """Under torchrun, destroy the process group before exit.

    A gloo group left to the interpreter's teardown can abort a rank ("terminate called
    without an active exception"), which torchrun reports as a failed run.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _cmd_select(args: argparse.Namespace) -> int:
    from dataflex.offline.config import load_offline_config
    from dataflex.offline.select import run_offline_select

    _setup_logging()
    config = load_offline_config(args.config, args.overrides)
    result = run_offline_select(config)
    print(
        f"selected {len(result.indices)} of {result.report['pool']} examples -> {result.output_dir} "
        "(scores.jsonl, dataset_info.json, selection.json)"
    )
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from dataflex.train.config import load_export_config
    from dataflex.train.export import run_export

    _setup_logging()
    cfg = load_export_config(args.config, args.overrides)
    print(f"exported the merged model to {run_export(cfg)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``dataflex-cli`` (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="dataflex-cli",
        description="Select training data while fine-tuning language models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("version", help="print the versions of dataflex, torch and transformers")
    p.set_defaults(handler=_cmd_version)

    p = sub.add_parser("train", help="fine-tune a model as a YAML config says (LLaMA-Factory keys)")
    p.add_argument("config", help="training YAML, e.g. examples/quickstart/sft.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys")
    p.set_defaults(handler=_cmd_train)

    p = sub.add_parser("export", help="merge a LoRA adapter into its base model and save it")
    p.add_argument("config", help="export YAML, e.g. examples/merge_lora/llama3_lora_sft.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys")
    p.set_defaults(handler=_cmd_export)

    p = sub.add_parser("list", help="list registered selectors, projectors and chat templates")
    p.add_argument("kind", nargs="?", choices=["selectors", "projectors", "templates"], help="only this kind")
    p.add_argument("--pattern", help="glob filter on names, e.g. 'l*'")
    p.add_argument(
        "--plugins",
        action="append",
        default=[],
        metavar="MODULE",
        help="import these modules or .py files first (comma-separated or repeated), as a config's "
        "`plugins:` does, so that the selectors and templates they register are listed",
    )
    p.set_defaults(handler=_cmd_list)

    p = sub.add_parser("select", help="offline selection: score a pool once and write the chosen subset")
    p.add_argument("config", help="select config YAML (see docs/selectors/less.md)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, values parsed as YAML")
    p.set_defaults(handler=_cmd_select)
    return parser


class Terminated(BaseException):
    """SIGTERM, raised where the process is, so that cleanup runs as for Ctrl-C (``KeyboardInterrupt``)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While a command runs, SIGTERM unwinds like Ctrl-C: locks released, temporary files removed.

    Not in a torchrun worker: there torchrun sends SIGTERM to stop the ranks when one failed,
    and a rank waiting in a collective could not unwind until torchrun gives up on it.
    """
    from dataflex.launch import under_torchrun

    if threading.current_thread() is not threading.main_thread() or under_torchrun():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped(command: str, exc: BaseException) -> int:
    """Say that ``command`` was stopped and how to go on; the shell's exit status for the signal."""
    terminated = isinstance(exc, Terminated)
    how = (
        "resume with resume_from_checkpoint: true (it continues from the last complete checkpoint)"
        if command == "train"
        else "run it again"
    )
    print(
        f"dataflex-cli {command}: stopped by {'SIGTERM' if terminated else 'Ctrl-C (SIGINT)'}; every file "
        f"written so far is complete or absent. To go on, {how}.",
        file=sys.stderr,
    )
    return 128 + (signal.SIGTERM if terminated else signal.SIGINT)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dataflex-cli``; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 with usage on unknown arguments
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_usage(sys.stderr)
        print("dataflex-cli: error: a command is required (try 'dataflex-cli --help')", file=sys.stderr)
        return 2
    try:
        with _sigterm_unwinds():
            return handler(args)
    except DataflexError as exc:
        from dataflex.relaunch import report_error

        report_error(f"dataflex-cli {args.command}", exc)  # once, even from every rank under torchrun
        return 1
    except (KeyboardInterrupt, Terminated) as exc:
        return _stopped(args.command, exc)


if __name__ == "__main__":
    sys.exit(main())
