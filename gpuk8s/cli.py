"""The `gpuk8s` command line: parse options, call the action, hand the result to the output layer.

Heavy modules (paramiko, Rich) are imported inside the commands so `--help` is instant. Errors
become a message and an exit code in `_boundary`, and only there: an expected error (Gpuk8sError)
prints its message; anything else is an internal error (exit 70) shown as one redacted line and
the log path, with a (redacted) traceback only under --debug.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

import typer

from gpuk8s import __version__
from gpuk8s.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_REMOTE, Gpuk8sError, InventoryError, UsageError

app = typer.Typer(
    name="gpuk8s",
    help="Turn bare-metal NVIDIA servers into a GPU Kubernetes cluster (kubeadm, containerd, "
         "Calico, NVIDIA GPU Operator).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,  # plain Click help: the Rich help formatter costs ~75 ms at start-up
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Options shared by several commands: defined once.
InventoryOpt = typer.Option(None, "--inventory", "-i", envvar="GPUK8S_INVENTORY",
                            help="Inventory YAML file (see docs/inventory.md).")
DebugOpt = typer.Option(False, "--debug", help="Show tracebacks (secrets redacted).")
ParallelOpt = typer.Option(64, "--parallel", min=1, max=1024, help="Hosts worked on at once.")
AcceptNewKeysOpt = typer.Option(
    False, "--accept-new-host-keys",
    help="Record unknown host keys in known_hosts (like StrictHostKeyChecking=accept-new).")
HostOpt = typer.Option(None, "--host", help="Only these hosts (repeatable).")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gpuk8s {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """gpuk8s: bare-metal NVIDIA servers to a GPU Kubernetes cluster."""


class _Run:
    """What the boundary needs to know about a command in flight: its log, for the path and redaction."""

    log = None


@contextmanager
def _boundary(debug: bool) -> Iterator[_Run]:
    """The one place errors become messages and exit codes."""
    run = _Run()
    try:
        yield run
    except typer.Exit:
        raise
    except BaseException as e:  # noqa: BLE001 - the boundary: everything ends here
        raise _fail(e, debug, run.log) from None
    finally:
        if run.log is not None:
            run.log.close()


def _fail(e: BaseException, debug: bool, log) -> typer.Exit:
    from gpuk8s import ui
    from gpuk8s.runlog import redact

    def clean(text: str) -> str:
        return log.redact(text) if log is not None else redact(text)

    if isinstance(e, KeyboardInterrupt):
        ui.print_error("interrupted")
        code = EXIT_INTERRUPTED
    elif isinstance(e, InventoryError) and e.problems:
        n = len(e.problems)
        ui.print_error(f"invalid inventory ({n} problem{'s' if n != 1 else ''}):")
        for p in e.problems:
            ui.err_console.print(f"  {p}", markup=False, highlight=False, soft_wrap=True)
        code = e.exit_code
    elif isinstance(e, Gpuk8sError):
        ui.print_error(clean(str(e)))
        code = e.exit_code
    elif isinstance(e, Exception):
        first = (str(e).strip().splitlines() or [""])[0]
        ui.print_error(clean(f"internal error: {type(e).__name__}: {first}") +
                       ("" if debug else " (run again with --debug for the traceback)"))
        code = EXIT_INTERNAL
        if log is not None:   # the whole (redacted) traceback, for the report of the bug
            import traceback

            log.write("-", "internal error:\n" + "".join(traceback.format_exception(e)))
    else:
        raise e
    if log is not None and log.path is not None:
        ui.err_console.print(f"log (secrets redacted): {log.path}", markup=False, highlight=False)
    if debug:
        import traceback

        from gpuk8s.shell import printable

        sys.stderr.write(printable(clean("".join(traceback.format_exception(e))), lines=True))
    return typer.Exit(code)


def _load(inventory: Optional[Path], local: bool = False, hosts: Optional[List[str]] = None):
    from gpuk8s.actions.base import only_hosts
    from gpuk8s.inventory import load_inventory, local_inventory

    if local and inventory is not None:
        raise UsageError("--local checks this machine with default settings; do not combine it "
                         "with --inventory (add the host with `connection: local` instead)")
    if local:
        inv = local_inventory()
    elif inventory is None:
        raise UsageError("no inventory: pass --inventory FILE (or set GPUK8S_INVENTORY), or --local "
                         "to check this machine")
    else:
        inv = load_inventory(inventory)
    return only_hosts(inv, hosts) if hosts else inv


@app.command()
def preflight(
    inventory: Optional[Path] = InventoryOpt,
    local: bool = typer.Option(False, "--local", help="Check this machine (no SSH, no inventory)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
    host: Optional[List[str]] = HostOpt,
    accept_new_host_keys: bool = AcceptNewKeysOpt,
    parallel: int = ParallelOpt,
    debug: bool = DebugOpt,
) -> None:
    """Check every host is ready to become a node; change nothing.

    Exit codes: 0 ready, 1 failed checks, 3 bad inventory, 4 unreachable hosts.
    """
    with _boundary(debug):
        from gpuk8s.actions.preflight import run_preflight
        from gpuk8s.phases.base import RunOptions

        inv = _load(inventory, local, host)
        quiet = json_out and not sys.stderr.isatty()   # CI and scripts: Rich is never imported
        progress = None if quiet else _ui().HostProgress()
        report = run_preflight(inv, RunOptions(accept_new_host_keys=accept_new_host_keys,
                                               parallel=parallel), progress=progress)
        if json_out:
            from gpuk8s.jsonout import print_json

            print_json(report.to_dict())
        else:
            _ui().render_preflight(report)
    raise typer.Exit(report.exit_code)


@app.command()
def up(
    inventory: Optional[Path] = InventoryOpt,
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="Connect and gather facts, print what would change, change nothing."),
    ignore: Optional[List[str]] = typer.Option(
        None, "--ignore", metavar="CHECK_ID", help="Proceed despite this failed preflight check (repeatable)."),
    kubeconfig: Optional[Path] = typer.Option(
        None, "--kubeconfig", help="Where to write the admin kubeconfig [default: ./<cluster>-kubeconfig]."),
    accept_new_host_keys: bool = AcceptNewKeysOpt,
    parallel: int = ParallelOpt,
    wait_timeout: float = typer.Option(900, "--wait-timeout", min=1,
                                       help="Seconds to wait for Calico and for nodes to be Ready."),
    log_file: Optional[Path] = typer.Option(None, "--log-file", help="Run log (secrets redacted)."),
    debug: bool = DebugOpt,
) -> None:
    """Take hosts that pass preflight to a running cluster; a re-run changes nothing or resumes.

    Exit codes: 0 done, 1 preflight failed (nothing changed), 3 bad inventory, 4 unreachable,
    5 a step failed (the report names host, command and stderr; re-run to resume).
    """
    with _boundary(debug) as run:
        from gpuk8s.actions.up import run_up
        from gpuk8s.errors import ActionFailed, PreflightFailed
        from gpuk8s.phases.base import RunOptions
        from gpuk8s.runlog import RunLog

        ui = _ui()
        inv = _load(inventory)
        run.log = log = RunLog(log_file or RunLog.default_path(inv.cluster.name, "up"))
        opts = RunOptions(dry_run=dry_run, ignore_checks=tuple(ignore or ()),
                          accept_new_host_keys=accept_new_host_keys, parallel=parallel,
                          kubeconfig_path=kubeconfig.resolve() if kubeconfig else None,
                          wait_timeout=wait_timeout)
        try:
            report = run_up(inv, opts, log=log, on_phase=ui.phase_printer(), progress=ui.HostProgress())
        except PreflightFailed as e:
            ui.render_preflight(e.report)
            raise
        except ActionFailed as e:
            ui.render_up(e.report)
            raise typer.Exit(e.exit_code) from None
        ui.render_up(report)
        if report.failed_hosts:
            ui.err_console.print(f"log (secrets redacted): {log.path}")
            raise typer.Exit(EXIT_REMOTE)


@app.command()
def render(
    inventory: Optional[Path] = InventoryOpt,
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write the files into."),
    os_family: str = typer.Option("debian", "--os-family",
                                  help="Package repository flavour: debian (apt) or rhel (dnf)."),
    debug: bool = DebugOpt,
) -> None:
    """Write every file gpuk8s would put on a host or apply to the cluster; connect nowhere.

    Files land in OUT/<host>/<path on the host> and OUT/cluster/. Tokens, certificate keys and
    the CA hash are obviously-fake placeholders: the real ones are generated at run time.
    """
    with _boundary(debug):
        from gpuk8s.actions.render import run_render

        written = run_render(_load(inventory), os_family, out)
        _ui().render_written(written, out)


def _ui():
    from gpuk8s import ui

    return ui


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
