"""The heart-pipeline command line: train, validate, score, evaluate, monitor, rollback, card, serve,
contract, convert, doctor, stack.

Exit codes: 0 success, 1 a pipeline failure (the last stderr line says why), 2 bad usage.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import heart_pipeline  # noqa: F401  (telemetry defaults before anything else is imported)
from heart_pipeline.evidence.algorithms import ALGORITHMS


def _absolute(path: str | None) -> str | None:
    """A user's relative path means relative to where they typed the command."""
    return str(Path(path).expanduser().resolve()) if path else None


@contextmanager
def _flow_environment(config: str | None, data: str | None) -> Iterator[Callable[[], None]]:
    """The inputs checked, then a Prefect server for the flow call in the block.

    With no server configured (PREFECT_API_URL or the Prefect profile) the data file is checked too,
    and the project's background server is reused or started (heart_pipeline.operations.local_server); else
    the data file is left to the load step so that its failure is recorded as a Failed flow run.
    Prefect has read its settings by then (the API check imports it), so the server's URL goes into
    Prefect's own ``temporary_settings`` for the block, and into the environment for child processes.
    """
    from heart_pipeline.config import load_config
    from heart_pipeline.operations import local_server, orphans, preflight
    from heart_pipeline.operations.runtime import quiet_console

    for orphan in orphans.reap():  # workers a killed run left behind; then this run's children carry its mark
        print(f"heart-pipeline: stopped {orphan}, left behind by a killed run", file=sys.stderr)
    orphans.mark_this_process()
    settings = load_config(config)
    preflight.check_before_run(settings.tracking_uri)  # the store, and the Prefect API when one is set
    server = None
    if not preflight.configured_prefect_api() and settings.prefect.local_server == "background":
        data_path = settings.resolve(data or settings.data.path)
        if data is not None or data_path.exists():  # an absent default file is written by the load step
            preflight.check_data_file(data_path, settings.data.max_memory_mb)
        server = local_server.use_for_this_process(settings)
    quiet_console()
    if server is not None and server.started_now:
        print(
            f"heart-pipeline: started a Prefect server in the background for this and later calls: "
            f"{server.api_url.removesuffix('/api')} (stop it with `make down`)",
            file=sys.stderr,
        )
    with ExitStack() as settings_scope:

        def ready() -> None:
            """Call once the flow is imported (the server starts meanwhile), right before calling it.
            The flow run sends heartbeats, so the crashed-run automation (on the stack's server and on
            the background one) marks it Crashed if this process is killed."""
            from prefect.settings import PREFECT_API_URL, temporary_settings

            from heart_pipeline.operations.zombies import heartbeat_settings

            updates: dict[Any, Any] = heartbeat_settings()
            if server is not None:
                local_server.wait_ready(server)  # and the crashed-run automation exists on it
                updates[PREFECT_API_URL] = server.api_url
            settings_scope.enter_context(temporary_settings(updates=updates))
            _close_runs_of_killed_flow_runs(settings.tracking_uri, server.api_url if server else None)

        try:
            yield ready
        except Exception:
            # A database that broke while the server ran shows as HTTP 503s; its log names the cause.
            if server is not None and (corrupt := local_server.corruption_message(server.layout)):
                raise local_server.LocalServerError(corrupt) from None
            raise


def _close_runs_of_killed_flow_runs(tracking_uri: str, api_url: str | None) -> None:
    """MLflow runs a killed flow run left RUNNING, closed once Prefect has marked that run ended."""
    from heart_pipeline.operations import doctor, preflight

    api_url = api_url or preflight.configured_prefect_api()
    if api_url:
        for run in doctor.close_runs_of_ended_flow_runs(tracking_uri, api_url):
            print(
                f"heart-pipeline: ended MLflow run {run.run_id} ({run.name}) as KILLED: its flow run "
                f"{run.flow_run_id} had ended without closing it",
                file=sys.stderr,
            )


# Where this process's flow call is, for the SIGTERM line: "not started", "running" or "finished".
_flow_phase = ["not started"]


def _call_flow(flow: Callable[..., dict[str, Any]], **parameters: Any) -> dict[str, Any]:
    """Call ``flow``, noting when it runs and when it has returned (its final state is then recorded).
    Whatever the libraries print meanwhile goes to stderr (MLflow writes "View run ..." lines to stdout
    against a tracking server): stdout carries only the summary or the --json result."""
    _flow_phase[0] = "running"
    with contextlib.redirect_stdout(sys.stderr):
        result = flow(**parameters)
    _flow_phase[0] = "finished"
    return result


def _train(args: argparse.Namespace) -> dict[str, Any]:
    with _flow_environment(args.config, args.data) as ready:
        from heart_pipeline.flows.training import heart_training

        ready()
        return _call_flow(
            heart_training,
            data_path=_absolute(args.data),
            config_path=_absolute(args.config),
            models=args.models,
            seed=args.seed,
            disease_label=args.disease_label,
            dask_address=args.dask,
            exclude_columns=args.without,
        )


def _validate(args: argparse.Namespace) -> dict[str, Any]:
    with _flow_environment(args.config, args.data) as ready:
        from heart_pipeline.flows.data_quality import heart_data_quality

        ready()
        return _call_flow(
            heart_data_quality,
            data_path=_absolute(args.data),
            config_path=_absolute(args.config),
            disease_label=args.disease_label,
        )


def _score(args: argparse.Namespace) -> dict[str, Any]:
    with _flow_environment(args.config, args.data) as ready:
        from heart_pipeline.flows.batch_scoring import heart_batch_scoring

        ready()
        return _call_flow(
            heart_batch_scoring,
            data_path=str(_absolute(args.data)),
            out_path=_absolute(args.out),
            config_path=_absolute(args.config),
        )


def _monitor(args: argparse.Namespace) -> dict[str, Any]:
    with _flow_environment(args.config, None) as ready:
        from heart_pipeline.flows.monitoring import heart_monitoring

        ready()
        return _call_flow(heart_monitoring, config_path=_absolute(args.config))


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    with _flow_environment(args.config, args.data[0]) as ready:
        from heart_pipeline.flows.external_validation import heart_external_validation

        ready()
        return heart_external_validation(
            data_paths=[str(_absolute(path)) for path in args.data],
            version=args.version,
            alias=args.alias,
            sites=args.site,
            config_path=_absolute(args.config),
            disease_label=args.disease_label,
        )


def _rollback(args: argparse.Namespace) -> dict[str, Any]:
    from heart_pipeline.config import load_config
    from heart_pipeline.tracking.registry import rollback_champion

    settings = load_config(_absolute(args.config))
    before, after = rollback_champion(settings.tracking_uri, settings.mlflow.registered_model, args.to_version)
    return {"registered_model": settings.mlflow.registered_model, "champion_before": before, "champion_after": after}


def _card(args: argparse.Namespace) -> dict[str, Any]:
    from heart_pipeline.config import load_config
    from heart_pipeline.evidence.model_card import render_html, render_markdown
    from heart_pipeline.tracking.model_cards import card_for

    settings = load_config(_absolute(args.config))
    card = card_for(settings, args.version)
    default = (
        settings.resolve(settings.outputs.runs_dir) / "model_cards" / f"{card.registered_model}-v{card.version}.html"
    )
    html_path = Path(_absolute(args.out) or default)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(render_html(card), encoding="utf-8")
    markdown_path = html_path.with_suffix(".md")
    markdown_path.write_text(render_markdown(card), encoding="utf-8")
    return {"version": card.version, "html": str(html_path), "markdown": str(markdown_path), "card": asdict(card)}


def _serve(args: argparse.Namespace) -> dict[str, Any]:
    import uvicorn

    from heart_pipeline.serving.app import create_app

    uvicorn.run(create_app(_absolute(args.config)), host=args.host, port=args.port, log_level="info")
    return {"stopped": True}


def _contract(args: argparse.Namespace) -> dict[str, Any]:
    from heart_pipeline.config import load_codebook_for, load_settings_and_contract

    settings, contract = load_settings_and_contract(_absolute(args.config))
    book = load_codebook_for(settings)
    print(f"codebook v{book.version} ({book.path.name}); label: {book.label_definition}")
    for rule in contract.rules:
        bounds = {k: v for k, v in rule.kwargs.items() if k not in ("column", "column_list")}
        print(f"{rule.severity:8} {rule.name:58} {bounds}\n{'':9}{rule.why}")
        if rule.type == "expect_column_values_to_be_in_set" and rule.column in book.columns:
            for code in rule.kwargs["value_set"]:
                print(f"{'':9}  {code} = {book.meaning(rule.column, code)}")
    return {
        "contract": contract.name,
        "columns": contract.columns,
        "rules": len(contract.rules),
        "codebook_version": book.version,
        "label_definition": book.label_definition,
        "codes": {name: {str(k): v for k, v in coded.codes.items()} for name, coded in book.columns.items()},
    }


def _convert(args: argparse.Namespace) -> dict[str, Any]:
    from heart_pipeline.config import load_codebook_for, load_config
    from heart_pipeline.data_contract.files import read_input_bytes
    from heart_pipeline.data_contract.importers import convert_file
    from heart_pipeline.errors import DataError

    settings = load_config(_absolute(args.config))
    source, out = Path(args.input).expanduser().resolve(), Path(args.out).expanduser().resolve()
    if source == out:
        raise DataError(f"{out}: --out must differ from the input file")
    data = read_input_bytes(source, settings.data.max_memory_mb * 2**20, "data.max_memory_mb")
    return convert_file(args.fmt, data, source, out, load_codebook_for(settings))


def _stack(args: argparse.Namespace) -> dict[str, Any]:
    from heart_pipeline.config import load_config
    from heart_pipeline.operations import local_server, stack

    layout = stack.default_layout(args.prefect_port, args.mlflow_port)
    # The CLI's background server is the one of the config its runs used (prefect.local_server_home).
    background = local_server.default_layout(load_config(_absolute(args.config)))
    if args.action == "up":
        print(
            f"Starting the stack: Prefect :{layout.prefect_port}, MLflow :{layout.mlflow_port} "
            "(1 to 5 minutes: the servers are slow to answer on a busy machine)",
            file=sys.stderr,
        )
        info = stack.up(layout, progress=lambda line: print(line, file=sys.stderr, flush=True))
        print(
            f"Prefect UI  {info['prefect_ui']}\nMLflow UI   {info['mlflow_ui']}\n"
            f"Ready after {info['ready_after_seconds']}s. In your shell: source .prefect/stack/stack.env\n"
            "Then: prefect deployment run 'heart-training/heart-training' --watch",
            file=sys.stderr,
        )
        return info
    # `down` and `status` act on the ports and folders `up` recorded, whatever the defaults are now.
    layout = stack.recorded_layout(layout)
    if args.action == "down":
        return {"stopped": [*stack.down(layout), *local_server.stop(background)]}
    if args.action == "reset-local":
        return {"done": local_server.reset(background)}
    report = stack.status(layout)
    for service, state in report.items():
        print(f"{service:15} {state}")
    found = local_server.running(background)
    # The background server of `heart-pipeline train` is not part of the stack: reported, not required.
    print(f"{'(background prefect-server for CLI runs)':15} {f'running at {found.api_url}' if found else 'stopped'}")
    if not stack.status_ok(report):
        raise stack.StackError("not everything runs and answers; `make down && make up` restarts the stack")
    return report


DISEASE_LABEL_HELP = (
    "the file's target code for disease: 0 for files coded like Kaggle's heart.csv (default: data.disease_label)"
)


def _doctor(args: argparse.Namespace) -> dict[str, Any]:
    from heart_pipeline.config import load_config
    from heart_pipeline.operations.doctor import diagnose
    from heart_pipeline.operations.preflight import check_tracking_store

    settings = load_config(_absolute(args.config))
    check_tracking_store(settings.tracking_uri)
    age = {} if args.older_than is None else {"min_age_minutes": args.older_than}
    return diagnose(settings.tracking_uri, settings.mlflow.registered_model, args.fix, **age)


Option = tuple[tuple[str, ...], dict[str, Any]]
CONFIG_OPTION: Option = (("--config",), {"help": "config YAML (default: config/config.yaml)"})
DISEASE_LABEL_OPTION: Option = (("--disease-label",), {"type": int, "choices": [0, 1], "help": DISEASE_LABEL_HELP})


# Every subcommand: its help, its handler and its options (each also takes --json).
SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace], dict[str, Any]], list[Option]]] = {
    "train": (
        "validate the data, train LR and RF, track and register them in MLflow",
        _train,
        [
            (("--data",), {"help": "CSV to train on (default: data.path in the config)"}),
            CONFIG_OPTION,
            (("--models",), {"nargs": "+", "choices": list(ALGORITHMS)}),
            (("--seed",), {"type": int, "help": "split and CV seed (default: split.seed in the config)"}),
            DISEASE_LABEL_OPTION,
            (
                ("--without",),
                {
                    "action": "append",
                    "metavar": "COL",
                    "help": "train without this feature (repeatable), e.g. a column a site never records; "
                    "adds to training.exclude_columns and is tagged on the version",
                },
            ),
            (
                ("--dask",),
                {
                    "nargs": "?",
                    "const": "auto",
                    "metavar": "ADDRESS",
                    "help": "CV folds and forest trees on a Dask cluster: a scheduler address; alone, "
                    "DASK_SCHEDULER_ADDRESS or else a local cluster (compute.local_dask_workers)",
                },
            ),
        ],
    ),
    "validate": (
        "check a CSV against the data contract without training",
        _validate,
        [
            (("--data",), {"help": "CSV to check (default: data.path in the config)"}),
            CONFIG_OPTION,
            DISEASE_LABEL_OPTION,
        ],
    ),
    "score": (
        "score a CSV of patients (no target) with the champion model",
        _score,
        [
            (("--data",), {"required": True, "help": "CSV of patients, the contract's columns minus the target"}),
            (("--out",), {"help": "also write the predictions CSV here"}),
            CONFIG_OPTION,
        ],
    ),
    "evaluate": (
        "external validation: a registered model on other sites' labelled files, one comparison table",
        _evaluate,
        [
            (
                ("--data",),
                {"required": True, "action": "append", "help": "a labelled CSV from a site (repeat for several)"},
            ),
            (("--version",), {"help": "the model version to validate (default: the one --alias points at)"}),
            (("--alias",), {"help": "a registered alias, default champion"}),
            (("--site",), {"action": "append", "help": "the site's name, once per --data (default: the file name)"}),
            CONFIG_OPTION,
            DISEASE_LABEL_OPTION,
        ],
    ),
    "monitor": (
        "judge the batches scored since the last monitoring run against the champion's training data: "
        "verdict ok, drift or performance drop, an offline HTML report, and a Prefect event on drift",
        _monitor,
        [CONFIG_OPTION],
    ),
    "rollback": (
        "move @champion back to the version it replaced",
        _rollback,
        [(("--to-version",), {"help": "a specific version instead of the previous champion"}), CONFIG_OPTION],
    ),
    "card": (
        "write the model card (HTML and Markdown) of a registered version, the champion by default",
        _card,
        [
            (("--version",), {"help": "a registered version (default: the current @champion)"}),
            (("--out",), {"help": "the HTML file to write (default: runs/model_cards/NAME-vN.html)"}),
            CONFIG_OPTION,
        ],
    ),
    "serve": (
        "the prediction API (FastAPI)",
        _serve,
        [(("--host",), {"default": "127.0.0.1"}), (("--port",), {"type": int, "default": 8000}), CONFIG_OPTION],
    ),
    "contract": ("print every data-contract rule with its severity and reason", _contract, [CONFIG_OPTION]),
    "convert": (
        "rewrite a UCI or Kaggle heart file in the project's codebook, with a provenance record",
        _convert,
        [
            (
                ("--from",),
                {
                    "dest": "fmt",
                    "required": True,
                    "choices": ["uci", "kaggle", "uci-text"],
                    "help": "the file's format",
                },
            ),
            (("input",), {"metavar": "IN", "help": "the file to convert"}),
            (("--out",), {"required": True, "help": "the CSV to write (and OUT.provenance.json beside it)"}),
            CONFIG_OPTION,
        ],
    ),
    "doctor": (
        "list MLflow runs stuck in RUNNING, model versions without a promotion decision, and the latest failed runs",
        _doctor,
        [
            (("--fix",), {"action": "store_true", "help": "end those runs as KILLED and tag those versions"}),
            (
                ("--older-than",),
                {
                    "type": float,
                    "metavar": "MINUTES",
                    "help": "only RUNNING runs and undecided versions at least this old (younger ones may belong "
                    "to a flow still running; default 30); failed runs are listed whatever their age",
                },
            ),
            CONFIG_OPTION,
        ],
    ),
    "stack": (
        "local Prefect server, MLflow server and worker (make up/down/status)",
        _stack,
        [
            (
                ("action",),
                {
                    "choices": ["up", "down", "status", "reset-local"],
                    "help": "reset-local: stop the CLI's background Prefect server and move its database aside",
                },
            ),
            (("--prefect-port",), {"type": int, "help": "default 4200 (or $PREFECT_PORT)"}),
            (("--mlflow-port",), {"type": int, "help": "default 5000 (or $MLFLOW_PORT)"}),
            (("--config",), {"help": "config YAML whose background server down/status/reset-local act on"}),
        ],
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="heart-pipeline", description=" ".join(__doc__.split("\n\n")[0].split()))
    # Every command takes --json: the full result for scripts, instead of the few lines for people.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the full result as JSON instead of a summary")
    sub = _SubcommandsWithCommonOptions(parser.add_subparsers(dest="command", required=True), common)
    for name, (help_text, handler, options) in SUBCOMMANDS.items():
        command = sub.add_parser(name, help=help_text)
        for flags, keywords in options:
            command.add_argument(*flags, **keywords)
        command.set_defaults(handler=handler)
    return parser


class _SubcommandsWithCommonOptions:
    """``add_parser`` that gives every subcommand the shared options."""

    def __init__(self, actions: Any, common: argparse.ArgumentParser) -> None:
        self.actions, self.common = actions, common

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return self.actions.add_parser(name, parents=[self.common], **kwargs)


def human_summary(command: str, result: dict[str, Any]) -> str:
    """The lines a person reads at the end of a command; ``--json`` prints everything instead."""
    from heart_pipeline.evidence import render

    summaries = {
        "train": render.training_terminal_summary,
        "validate": render.validation_terminal_summary,
        "score": render.scoring_terminal_summary,
        "evaluate": render.external_terminal_summary,
    }
    if command in summaries:
        return summaries[command](result)
    if command == "monitor":
        return "\n".join([result["headline"], *result["details"], f"report: {result['report']}"])
    if command == "card":
        return f"Model card of v{result['version']}: {result['html']} (and {Path(result['markdown']).name})"
    if command == "doctor":
        from heart_pipeline.operations.doctor import summary

        return summary(result)
    if command == "rollback":
        return f"{result['registered_model']}@champion: v{result['champion_before']} -> v{result['champion_after']}"
    if command == "stack" and "done" in result:
        return "\n".join(result["done"]) or "no background server and no database to reset"
    if command == "stack" and "stopped" in result:
        return "\n".join(f"stopped {service}" for service in result["stopped"]) or "nothing of the stack was running"
    return ""  # contract, stack up/status and serve print as they go


_last_words: list[tuple[str, bool]] = []


def _print_last_words() -> None:
    for text, to_stdout in _last_words:
        print(text, file=sys.stdout if to_stdout else sys.stderr, flush=True)


def _say_last(message: str, to_stdout: bool = False) -> None:
    """Queue ``message`` to be printed last, after Prefect's own exit lines (see ``main``)."""
    _last_words.append((message, to_stdout))


STOPPED_BY_SIGTERM = (
    "heart-pipeline: stopped by SIGTERM; the flow run in progress is marked Crashed and its open MLflow "
    "runs ended (`heart-pipeline doctor` checks)"
)
STOPPED_BY_SIGTERM_AFTER = {
    "not started": "heart-pipeline: stopped by SIGTERM before any flow run started; nothing was recorded",
    "finished": "heart-pipeline: stopped by SIGTERM after the flow run had finished; its state in Prefect is "
    "final, only this summary was cut short",
}


def _sigterm_line() -> str:
    """What a SIGTERM did, by where the flow call was: only a running flow run is marked Crashed."""
    return STOPPED_BY_SIGTERM_AFTER.get(_flow_phase[0], STOPPED_BY_SIGTERM)


class Terminated(BaseException):
    """SIGTERM outside a flow run (inside one, Prefect's own handler raises TerminationSignal)."""


def _raise_terminated(signum: int, _frame: object) -> None:
    raise Terminated(signum)


def _is_termination(exc: BaseException) -> bool:
    from heart_pipeline.operations.runs import caused_by_termination

    return isinstance(exc, Terminated) or caused_by_termination(exc)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM unwinds like an exception (finally blocks run, MLflow runs end) instead of killing the
    # process mid-write; during a flow run Prefect swaps in its own handler, which marks the run Crashed.
    signal.signal(signal.SIGTERM, _raise_terminated)
    # Prefect stops its temporary server in an atexit hook that logs a line. Hooks run last-in,
    # first-out, and this one is registered before Prefect's, so the summary or the reason is the
    # last thing printed. Registered once per process: main() called again in-process (a test, a
    # notebook) would otherwise print every queued line once per call.
    atexit.unregister(_print_last_words)
    atexit.register(_print_last_words)
    from heart_pipeline.errors import PipelineError, shorten

    try:
        _say_result(args, args.handler(args))  # inside: a SIGTERM while summarising is reported too
    except PipelineError as exc:
        _say_last(f"heart-pipeline: error: {exc}")
        return 1
    except KeyboardInterrupt:
        _say_last("heart-pipeline: interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - the contract is one line, not a traceback
        if _is_termination(exc):
            _say_last(_sigterm_line())
            return 128 + signal.SIGTERM
        reason = shorten(str(exc)) or type(exc).__name__  # a library's message may quote file content
        _say_last(f"heart-pipeline: error: {type(exc).__name__}: {reason}")
        return 1
    except BaseException as exc:
        if not _is_termination(exc):
            raise
        _say_last(_sigterm_line())
        return 128 + signal.SIGTERM
    return 0


def _say_result(args: argparse.Namespace, result: dict[str, Any]) -> None:
    if args.json:
        _say_last(json.dumps(result, indent=2, default=str), to_stdout=True)
    elif summary := human_summary(args.command, result):
        _say_last(summary, to_stdout=True)


if __name__ == "__main__":
    sys.exit(main())
