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
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout (progress "
                                  "stays on stderr)."),
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
        from gpuk8s.jsonout import print_json

        try:
            report = run_up(inv, opts, log=log, on_phase=ui.phase_printer(), progress=ui.HostProgress())
        except PreflightFailed as e:
            if json_out:
                from gpuk8s.actions.up import preflight_failed_document

                print_json(preflight_failed_document(e.report, log.redact(str(e)), dry_run))
            else:
                ui.render_preflight(e.report)
            raise
        except ActionFailed as e:
            print_json(e.report.to_dict()) if json_out else ui.render_up(e.report)
            raise typer.Exit(e.exit_code) from None
        print_json(report.to_dict()) if json_out else ui.render_up(report)
        if report.failed_hosts:
            ui.err_console.print(f"log (secrets redacted): {log.path}")
            raise typer.Exit(EXIT_REMOTE)


@app.command()
def join(
    inventory: Optional[Path] = InventoryOpt,
    host: Optional[List[str]] = typer.Option(
        None, "--host", help="Only these hosts (repeatable) [default: every host not yet a node]."),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="Connect and gather facts, print what would change, change nothing."),
    ignore: Optional[List[str]] = typer.Option(
        None, "--ignore", metavar="CHECK_ID", help="Proceed despite this failed preflight check (repeatable)."),
    accept_new_host_keys: bool = AcceptNewKeysOpt,
    parallel: int = ParallelOpt,
    wait_timeout: float = typer.Option(900, "--wait-timeout", min=1,
                                       help="Seconds to wait for the new nodes to be Ready."),
    log_file: Optional[Path] = typer.Option(None, "--log-file", help="Run log (secrets redacted)."),
    debug: bool = DebugOpt,
) -> None:
    """Add the inventory hosts that are not nodes of the running cluster yet (nodes are left alone).

    Exit codes: 0 done, 1 preflight failed (nothing changed), 3 bad inventory, 4 unreachable,
    5 a step failed or the cluster does not answer (re-run to resume).
    """
    with _boundary(debug) as run:
        from gpuk8s.actions.join import run_join
        from gpuk8s.errors import ActionFailed, PreflightFailed
        from gpuk8s.phases.base import RunOptions
        from gpuk8s.runlog import RunLog

        ui = _ui()
        inv = _load(inventory)
        run.log = log = RunLog(log_file or RunLog.default_path(inv.cluster.name, "join"))
        opts = RunOptions(dry_run=dry_run, ignore_checks=tuple(ignore or ()),
                          accept_new_host_keys=accept_new_host_keys, parallel=parallel,
                          wait_timeout=wait_timeout)
        try:
            report = run_join(inv, opts, log=log, hosts=host or (), on_phase=ui.phase_printer(),
                              progress=ui.HostProgress())
        except PreflightFailed as e:
            ui.render_preflight(e.report)
            raise
        except ActionFailed as e:
            ui.render_join(e.report)
            raise typer.Exit(e.exit_code) from None
        ui.render_join(report)
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


@app.command("kubeconfig")
def kubeconfig_cmd(
    inventory: Optional[Path] = InventoryOpt,
    user: Optional[str] = typer.Option(
        None, "--user", help="A kubeconfig for this user (a client certificate signed by the cluster CA), "
                             "not the admin's."),
    cluster_role: str = typer.Option("view", "--cluster-role", help="ClusterRole bound to --user."),
    expiry: str = typer.Option("24h", "--expiry", help="Validity of --user's certificate (24h, 90m, 30d)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write it to this file (mode 0600)."),
    merge: bool = typer.Option(False, "--merge",
                               help="Merge it into $KUBECONFIG's first file or ~/.kube/config, under the "
                                    "cluster's name (other entries kept)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would change, change nothing."),
    accept_new_host_keys: bool = AcceptNewKeysOpt,
    log_file: Optional[Path] = typer.Option(None, "--log-file", help="Run log (secrets redacted)."),
    debug: bool = DebugOpt,
) -> None:
    """Fetch the admin kubeconfig (or make one for --user); server = the control-plane endpoint.

    Without -o or --merge the kubeconfig is printed on stdout (as `k0sctl kubeconfig` does);
    everything else goes to stderr. Exit codes: 0 done, 2 bad options, 3 bad inventory,
    4 unreachable, 5 no control plane answered or a step failed.
    """
    with _boundary(debug) as run:
        from gpuk8s.actions.kubeconfig import run_kubeconfig
        from gpuk8s.kubeconfig import default_merge_target, parse_duration
        from gpuk8s.phases.base import RunOptions
        from gpuk8s.phases.kubeconfig import KubeconfigRequest
        from gpuk8s.runlog import RunLog

        if output is not None and merge:
            raise UsageError("-o/--output and --merge are exclusive: pick one")
        request = KubeconfigRequest(user=user, role=cluster_role, expiry_s=parse_duration(expiry),
                                    output=output.resolve() if output else None,
                                    merge=default_merge_target() if merge else None)
        request.validate()
        inv = _load(inventory)
        run.log = log = RunLog(log_file or RunLog.default_path(inv.cluster.name, "kubeconfig"))
        ui = _ui()
        report = run_kubeconfig(inv, request, RunOptions(dry_run=dry_run,
                                                         accept_new_host_keys=accept_new_host_keys),
                                log=log, progress=None)
        ui.render_kubeconfig(report)


@app.command()
def verify(
    inventory: Optional[Path] = InventoryOpt,
    host: Optional[List[str]] = HostOpt,
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Also write a JUnit XML report to FILE."),
    no_smoke: bool = typer.Option(False, "--no-smoke", help="Skip the CUDA smoke Jobs."),
    kubeconfig: Optional[Path] = typer.Option(
        None, "--kubeconfig", help="Run kubectl here with this kubeconfig [default: on the first "
                                   "reachable control plane, with its admin.conf]."),
    accept_new_host_keys: bool = AcceptNewKeysOpt,
    parallel: int = ParallelOpt,
    log_file: Optional[Path] = typer.Option(None, "--log-file", help="Run log (secrets redacted)."),
    debug: bool = DebugOpt,
) -> None:
    """Prove a running cluster is healthy: host checks, cluster checks, CUDA smoke Jobs.

    Read-only except the smoke Jobs, which it deletes. Exit codes: 0 nothing failed, 1 failed
    checks, 3 bad inventory, 4 unreachable hosts (docs/verify.md).
    """
    with _boundary(debug) as run:
        from gpuk8s.actions.base import only_hosts
        from gpuk8s.actions.verify import run_verify
        from gpuk8s.phases.base import RunOptions
        from gpuk8s.runlog import RunLog

        full = _load(inventory)
        inv = only_hosts(full, host) if host else full
        if kubeconfig is not None and not kubeconfig.is_file():
            raise UsageError(f"--kubeconfig: no such file: {kubeconfig}")
        run.log = log = RunLog(log_file or RunLog.default_path(full.cluster.name, "verify"))
        quiet = json_out and not sys.stderr.isatty()   # CI and scripts: Rich is never imported
        progress = None if quiet else _ui().HostProgress()
        report = run_verify(inv, RunOptions(accept_new_host_keys=accept_new_host_keys, parallel=parallel),
                            full=full, smoke=not no_smoke,
                            kubeconfig=str(kubeconfig.resolve()) if kubeconfig else None, progress=progress,
                            log=log)
        if junit is not None:
            from gpuk8s.junit import write_junit

            try:
                write_junit(report, junit)
            except OSError as e:
                raise UsageError(f"--junit: cannot write {junit}: {e.strerror or e}") from None
        if json_out:
            from gpuk8s.jsonout import print_json

            print_json(report.to_dict())
        else:
            _ui().render_verify(report)
    raise typer.Exit(report.exit_code)


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


@app.command()
def reset(
    inventory: Optional[Path] = InventoryOpt,
    host: Optional[List[str]] = typer.Option(None, "--host", help="Reset this host (repeatable)."),
    all_hosts: bool = typer.Option(False, "--all", help="Reset every host: the whole cluster is gone."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan, change nothing."),
    drain_timeout: float = typer.Option(300, "--drain-timeout", min=1,
                                        help="Seconds `kubectl drain` may take per node."),
    accept_new_host_keys: bool = AcceptNewKeysOpt,
    parallel: int = ParallelOpt,
    log_file: Optional[Path] = typer.Option(None, "--log-file", help="Run log (secrets redacted)."),
    debug: bool = DebugOpt,
) -> None:
    """Remove nodes: cordon and drain, kubeadm reset (etcd member too), clean up, delete the Node.

    Refuses the last control plane, or one whose removal loses etcd quorum, unless --all. Asks
    for confirmation unless --yes (and refuses without --yes when stdin is not a terminal). A
    reset interrupted half-way is finished by running it again. Exit codes: 0 done, 2 refused or
    bad options, 3 bad inventory, 4 unreachable, 5 a step failed (e.g. a drain blocked by a PDB).
    """
    with _boundary(debug) as run:
        from gpuk8s.actions.reset import run_reset
        from gpuk8s.errors import ActionFailed
        from gpuk8s.phases.base import RunOptions
        from gpuk8s.phases.reset import ResetRequest
        from gpuk8s.runlog import RunLog

        if not yes and not dry_run and not _stdin_is_terminal():
            raise UsageError("refusing to reset without --yes: stdin is not a terminal to confirm on")
        ui = _ui()

        def confirm(plan: str) -> bool:
            ui.err_console.print(plan, markup=False, highlight=False)
            return typer.confirm("Reset these hosts?", default=False, err=True)

        inv = _load(inventory)
        run.log = log = RunLog(log_file or RunLog.default_path(inv.cluster.name, "reset"))
        request = ResetRequest(hosts=tuple(host or ()), all=all_hosts, drain_timeout=drain_timeout,
                               confirm=None if yes else confirm)
        opts = RunOptions(dry_run=dry_run, accept_new_host_keys=accept_new_host_keys, parallel=parallel)
        try:
            report = run_reset(inv, request, opts, log=log, on_phase=ui.phase_printer(),
                               progress=ui.HostProgress())
        except ActionFailed as e:
            ui.render_reset(e.report)
            raise typer.Exit(e.exit_code) from None
        ui.render_reset(report)


def _ui():
    from gpuk8s import ui

    return ui


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
