"""The `gpuk8s` command line: parse options, call the package, render the result.

Heavy modules (paramiko, Rich tables) are imported inside the commands so `--help` is instant.
Expected errors (Gpuk8sError) become a message and their exit code here, and only here.
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path
from typing import List, Optional

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

InventoryOpt = typer.Option(None, "--inventory", "-i", envvar="GPUK8S_INVENTORY",
                            help="Inventory YAML file (see docs/inventory.md).")


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


def _fail(e: BaseException, debug: bool) -> "typer.Exit":
    from gpuk8s import ui

    if isinstance(e, InventoryError) and e.problems:
        n = len(e.problems)
        ui.print_error(f"invalid inventory ({n} problem{'s' if n != 1 else ''}):")
        for p in e.problems:
            ui.err_console.print(f"  {p}", markup=False, highlight=False, soft_wrap=True)
    elif isinstance(e, KeyboardInterrupt):
        ui.print_error("interrupted")
        return typer.Exit(EXIT_INTERRUPTED)
    else:
        ui.print_error(str(e))
    if debug:
        import traceback

        traceback.print_exception(e)
    return typer.Exit(getattr(e, "exit_code", EXIT_INTERNAL))


def _load(inventory: Optional[Path], local: bool, hosts: Optional[List[str]]):
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
    if hosts:
        unknown = [h for h in hosts if h not in {x.name for x in inv.hosts}]
        if unknown:
            raise UsageError(f"--host: no such host in {inv.path}: {', '.join(unknown)}")
        from dataclasses import replace

        inv = replace(inv, hosts=tuple(h for h in inv.hosts if h.name in hosts))
    return inv


@app.command()
def preflight(
    inventory: Optional[Path] = InventoryOpt,
    local: bool = typer.Option(False, "--local", help="Check this machine (no SSH, no inventory)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
    host: Optional[List[str]] = typer.Option(None, "--host", help="Only these hosts (repeatable)."),
    accept_new_host_keys: bool = typer.Option(
        False, "--accept-new-host-keys",
        help="Record unknown host keys in known_hosts (like StrictHostKeyChecking=accept-new)."),
    parallel: int = typer.Option(64, "--parallel", min=1, max=1024, help="Hosts probed at once."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Check every host is ready to become a node; change nothing.

    Exit codes: 0 ready, 1 failed checks, 3 bad inventory, 4 unreachable hosts.
    """
    try:
        from gpuk8s.preflight import run_preflight

        inv = _load(inventory, local, host)
        if json_out and not sys.stderr.isatty():
            progress = nullcontext(None)  # CI and scripts: nothing to show, Rich never imported
        else:
            from gpuk8s import ui

            progress = ui.host_progress(len(inv.hosts), "probing hosts", enabled=True)
        with progress as on_done:
            report = run_preflight(inv, accept_new_host_keys=accept_new_host_keys,
                                   parallel=parallel, on_host_done=on_done)
        if json_out:
            from gpuk8s.jsonout import print_json

            print_json(report.to_dict())
        else:
            ui.render_preflight(report)
    except (Gpuk8sError, KeyboardInterrupt) as e:
        raise _fail(e, debug) from None
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
    accept_new_host_keys: bool = typer.Option(False, "--accept-new-host-keys",
                                              help="Record unknown host keys in known_hosts."),
    parallel: int = typer.Option(64, "--parallel", min=1, max=1024, help="Hosts worked on at once."),
    wait_timeout: float = typer.Option(900, "--wait-timeout", min=1,
                                       help="Seconds to wait for Calico and for nodes to be Ready."),
    log_file: Optional[Path] = typer.Option(None, "--log-file", help="Run log (secrets redacted)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Take hosts that pass preflight to a running cluster; a re-run changes nothing or resumes.

    Exit codes: 0 done, 1 preflight failed (nothing changed), 3 bad inventory, 4 unreachable,
    5 a step failed (the report names host, command and stderr; re-run to resume).
    """
    from gpuk8s import ui
    from gpuk8s.phases.base import UpOptions
    from gpuk8s.runlog import RunLog

    log = None
    try:
        from gpuk8s.up import PreflightFailed, UpFailed, run_up

        inv = _load(inventory, False, None)
        log = RunLog(log_file or RunLog.default_path(inv.cluster.name, "up"))
        opts = UpOptions(dry_run=dry_run, ignore_checks=tuple(ignore or ()),
                         accept_new_host_keys=accept_new_host_keys, parallel=parallel,
                         kubeconfig_path=kubeconfig.resolve() if kubeconfig else None,
                         wait_timeout=wait_timeout)
        try:
            report = run_up(inv, opts, log=log, on_phase=ui.phase_printer(), progress=ui.HostProgress())
        except PreflightFailed as e:
            ui.render_preflight(e.report)
            raise
        except UpFailed as e:
            ui.render_up(e.report)
            raise typer.Exit(e.exit_code) from None
        ui.render_up(report)
        if report.failed_hosts:
            ui.err_console.print(f"log (secrets redacted): {log.path}")
            raise typer.Exit(EXIT_REMOTE)
    except (Gpuk8sError, KeyboardInterrupt) as e:
        if log is not None and log.path is not None:
            ui.err_console.print(f"log (secrets redacted): {log.path}")
        raise _fail(e, debug) from None
    finally:
        if log is not None:
            log.close()


@app.command()
def render(
    inventory: Optional[Path] = InventoryOpt,
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write the files into."),
    os_family: str = typer.Option("debian", "--os-family",
                                  help="Package repository flavour: debian (apt) or rhel (dnf)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Write every file gpuk8s would put on a host or apply to the cluster; connect nowhere.

    Files land in OUT/<host>/<path on the host> and OUT/cluster/. Tokens, certificate keys and
    the CA hash are obviously-fake placeholders: the real ones are generated at run time.
    """
    try:
        from gpuk8s import ui
        from gpuk8s.render import render_all, write_tree

        if os_family not in ("debian", "rhel"):
            raise UsageError(f"--os-family must be debian or rhel, not {os_family!r}")
        inv = _load(inventory, False, None)
        written = write_tree(render_all(inv, os_family), out)
        for p in written:
            ui.out_console().print(str(p), markup=False, highlight=False)
        ui.err_console.print(f"wrote {len(written)} files under {out}")
    except (Gpuk8sError, KeyboardInterrupt) as e:
        raise _fail(e, debug) from None


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
