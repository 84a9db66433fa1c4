"""Human output (Rich) and machine output (JSON). Imported only when a command runs."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from gpuk8s.shell import printable

STATUS_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}
_ORDER = {"fail": 0, "warn": 1, "pass": 2, "skip": 3}

err_console = Console(stderr=True)


def out_console() -> Console:
    return Console()


def _safe(value) -> str:
    """A value for Rich markup: control characters escaped (see shell.printable), markup escaped."""
    return escape(printable(value))


def _host_summary(h) -> str:
    f = h.facts
    if f is None:
        return ""
    parts = []
    if f.os.pretty_name:
        parts.append(f.os.pretty_name)
    if f.gpus:
        names: dict[str, int] = {}
        for g in f.gpus:
            names[g.name or g.device_id] = names.get(g.name or g.device_id, 0) + 1
        parts.append(", ".join(f"{n}× {name}" for name, n in names.items()))
    return " · ".join(parts)


def render_preflight(report, console: Console | None = None) -> None:
    """Hosts at a glance, then each host's failing checks (with fixes) first, then a summary line."""
    console = console or out_console()
    table = Table(title="gpuk8s preflight", title_justify="left", header_style="bold")
    for col in ("host", "address", "status", "fail", "warn", "pass", "host details"):
        table.add_column(col, no_wrap=col in ("host", "address", "status"))
    for h in report.hosts:
        if not h.reachable:
            status = Text(f"unreachable ({h.error_kind})", style="bold red")
            table.add_row(_safe(h.name), _safe(h.address), status, "", "", "", _safe(h.error or ""))
            continue
        nfail, nwarn = len(h.failed), len(h.warnings)
        npass = sum(1 for c in h.checks if c.status == "pass")
        if nfail or h.error:
            status = Text("not ready", style="bold red")
        elif nwarn:
            status = Text("ready (warnings)", style="yellow")
        else:
            status = Text("ready", style="green")
        table.add_row(_safe(h.name), _safe(h.address), status, str(nfail) if nfail else "",
                      str(nwarn) if nwarn else "", str(npass), _safe(_host_summary(h)))
    console.print(table)

    for h in report.hosts:
        if not h.reachable:
            continue
        problems = sorted((c for c in h.checks if c.status in ("fail", "warn")),
                          key=lambda c: _ORDER[c.status])
        unparsed = h.facts.parse_errors if h.facts is not None else {}
        if not problems and not h.error and not unparsed:
            continue
        body = Text()
        if h.error:
            body.append("error  ", style="bold red")
            body.append(printable(h.error) + "\n")
        for fields, why in sorted(unparsed.items()):
            body.append("warn   ", style=STATUS_STYLE["warn"])
            body.append("probe output", style="bold")
            body.append(f"  not understood, left unknown: {printable(fields)} ({printable(why)})\n")
        for c in problems:
            body.append(f"{c.status:<5}  ", style=STATUS_STYLE[c.status])
            body.append(printable(c.id), style="bold")
            body.append(f"  {printable(c.message)}\n")
            if c.fix:
                for line in c.fix.splitlines():
                    body.append(f"         $ {printable(line)}\n", style="cyan")
        border = "red" if h.failed or h.error else "yellow"
        body.rstrip()
        console.print(Panel(body, title=Text(printable(f"{h.name} ({h.address})")), title_align="left",
                            border_style=border))

    console.print(summary_line(report))


def summary_line(report) -> Text:
    n = len(report.hosts)
    unreachable = len(report.unreachable)
    not_ready = sum(1 for h in report.hosts if h.reachable and (h.failed or h.error))
    ready = n - unreachable - not_ready
    fails = sum(len(h.failed) for h in report.hosts)
    warns = sum(len(h.warnings) for h in report.hosts)
    style = "bold green" if report.ok else "bold red"
    verdict = "all hosts ready" if report.ok else "not ready"
    return Text(f"{verdict}: {n} host{'s' if n != 1 else ''}, {ready} ready, {not_ready} with failed "
                f"checks, {unreachable} unreachable; {fails} failed check{'s' if fails != 1 else ''}, "
                f"{warns} warning{'s' if warns != 1 else ''}", style=style)


def render_verify(report, console: Console | None = None) -> None:
    """`verify`: one table grouped by host and by cluster, failures first with their fix."""
    console = console or out_console()
    table = Table(title="gpuk8s verify", title_justify="left", header_style="bold", show_lines=False)
    for col in ("group", "status", "check", "message"):
        table.add_column(col, no_wrap=col in ("group", "status", "check"))

    def rows(group: str, checks) -> None:
        first = True
        for c in sorted(checks, key=lambda c: _ORDER[c.status]):
            msg = Text(printable(c.message))
            if c.status in ("fail", "warn") and c.fix:
                for line in c.fix.splitlines():
                    msg.append(f"\n$ {printable(line)}", style="cyan")
            table.add_row(_safe(group) if first else "", Text(c.status, style=STATUS_STYLE[c.status]),
                          _safe(c.id), msg)
            first = False

    for h in sorted(report.hosts, key=lambda h: (h.reachable and not h.failed and not h.error, h.name)):
        if not h.reachable:
            table.add_row(_safe(h.name), Text("fail", style=STATUS_STYLE["fail"]), "reachable",
                          Text(printable(f"unreachable ({h.error_kind}): {h.error}")))
            table.add_section()
            continue
        if h.error:
            table.add_row(_safe(h.name), Text("fail", style=STATUS_STYLE["fail"]), "host", Text(printable(h.error)))
        rows("" if h.error else h.name, h.checks)
        table.add_section()
    rows(f"cluster ({report.cluster.where or '-'})", report.cluster.checks)
    console.print(table)
    fails = sum(len(h.failed) for h in report.hosts) + len(report.cluster.failed)
    bad = len(report.unreachable)
    if report.ok:
        console.print(Text(f"cluster healthy: {len(report.hosts)} hosts, "
                           f"{sum(len(h.checks) for h in report.hosts) + len(report.cluster.checks)} checks, "
                           "nothing failed", style="bold green"))
    else:
        console.print(Text(f"not healthy: {fails} failed check{'s' if fails != 1 else ''}, {bad} "
                           f"unreachable host{'s' if bad != 1 else ''}", style="bold red"))


def render_written(paths, out) -> None:
    """`render`: every file written (stdout), then a count (stderr)."""
    console = out_console()
    for p in paths:
        console.print(printable(p), markup=False, highlight=False)
    err_console.print(f"wrote {len(paths)} files under {printable(out)}", markup=False, highlight=False)


def print_error(message: str) -> None:
    err_console.print(Text("error: ", style="bold red") + Text(printable(message, lines=True)),
                      soft_wrap=True)


def phase_printer(console: Console | None = None):
    """Callback for run_phases: a line when a phase starts and when it ends."""
    console = console or err_console

    def on_phase(title: str, result) -> None:
        if result is None:
            console.print(f"[bold]→ {_safe(title)}[/]")
        elif result.error:
            console.print(f"[bold red]✗ {_safe(title)}[/] ({result.seconds:.1f}s)")
        else:
            what = f"{len(result.changes)} change{'s' if len(result.changes) != 1 else ''}" \
                if result.changes else "no changes"
            console.print(f"[green]✓ {_safe(title)}[/] — {what} ({result.seconds:.1f}s)")
            for note in result.notes:
                console.print(f"    {_safe(note)}", style="dim")

    return on_phase


def render_plan(plan, console: Console | None = None) -> None:
    """A dry run's plan: per host, each change with its commands and files (secrets as ***)."""
    console = console or out_console()
    if not plan.changes:
        console.print("[green]nothing to do: the cluster already matches the inventory[/]")
        return
    for host in plan.hosts():
        body = Text()
        for c in plan.for_host(host):
            body.append("• " + printable(c.description) + "\n", style="bold")
            for cmd in c.commands:
                body.append(f"    $ {printable(cmd)}\n", style="cyan")
            for f in c.files:
                body.append(f"    write {printable(f.path)} (mode {f.mode:04o}):\n", style="cyan")
                for line in f.masked().rstrip("\n").splitlines():
                    body.append(f"      | {printable(line)}\n", style="dim")
        body.rstrip()
        console.print(Panel(body, title=Text(printable(f"{host}: would change")), title_align="left",
                            border_style="yellow"))


def render_phases(report, command: str, console: Console) -> bool:
    """What `up` and `join` print first: the phase table, the GPU nodes, a dry run's plan, the
    failed hosts and the error; False when the run failed (the caller prints no outcome)."""
    table = Table(title=f"gpuk8s {command}" + (" (dry run)" if report.dry_run else ""),
                  title_justify="left", header_style="bold")
    for col, justify in (("phase", "left"), ("result", "left"), ("seconds", "right")):
        table.add_column(col, justify=justify)
    for p in report.phases:
        if p.error:
            res = Text("failed", style="bold red")
        elif p.skipped:
            res = Text("not needed", style="dim")
        elif p.changes:
            res = Text(f"{'would change' if report.dry_run else 'changed'} {len(p.changes)}", style="yellow")
        else:
            res = Text("unchanged", style="green")
        table.add_row(_safe(p.name), res, f"{p.seconds:.1f}")
    console.print(table)
    render_gpu_nodes(getattr(report, "gpu_nodes", None) or [], console)
    if report.dry_run:
        render_plan(report.plan, console)
    for name, why in report.failed_hosts.items():
        console.print(Text(printable(f"✗ {name}: {why}"), style="bold red"))
    if report.error:
        console.print(Text(f"failed: {printable(report.error, lines=True)}", style="bold red"))
        if report.log_path:
            console.print(Text(f"full log (secrets redacted): {printable(report.log_path)}"))
        return False
    return True


def render_up(report, console: Console | None = None) -> None:
    """Per-phase durations and the outcome."""
    console = console or out_console()
    if render_phases(report, "up", console) and not report.dry_run:
        if report.failed_hosts:
            console.print(Text(f"cluster up except {printable(', '.join(report.failed_hosts))}: fix "
                               f"{'it' if len(report.failed_hosts) == 1 else 'them'} and run "
                               f"`gpuk8s up` again", style="bold red"))
        elif report.changed:
            console.print(Text(f"cluster ready; {len(report.plan.changes)} changes made", style="bold green"))
        else:
            console.print(Text("nothing to do: the cluster already matches the inventory", style="bold green"))
        if report.kubeconfig:
            kc = printable(report.kubeconfig)
            console.print(Text(f"kubeconfig: {kc}  (export KUBECONFIG={kc})"))


def render_gpu_nodes(rows: list[dict], console: Console) -> None:
    """One row per GPU node: model, GPUs on the bus, driver, allocatable, sharing, smoke result."""
    if not rows:
        return
    table = Table(title="GPU nodes", title_justify="left", header_style="bold")
    for col in ("node", "model", "GPUs (PCI)", "driver", "allocatable", "sharing", "smoke test"):
        table.add_column(col)
    for r in rows:
        alloc = "-" if r.get("allocatable") is None else f"{r['allocatable']} {r.get('resource', '')}".strip()
        smoke = str(r.get("smoke", ""))
        style = "green" if smoke.startswith("passed") else "bold red" if smoke.startswith("failed") else "dim"
        table.add_row(*(printable(str(v)) for v in (
            r.get("node", ""), r.get("model", ""), r.get("gpus", ""),
            f"{r.get('driver_mode', '')} {r.get('driver_version', '')}".strip(), alloc,
            r.get("sharing", ""))), Text(printable(smoke), style=style))
    console.print(table)


class HostProgress:
    """Per-host progress inside a parallel phase (a transient bar on stderr, on a terminal only)."""

    def __init__(self, console: Console | None = None):
        self.console = console or err_console
        self._progress = None
        self._task = None

    def start(self, title: str, total: int) -> None:
        if not self.console.is_terminal or total == 0:
            return
        self._progress = Progress(SpinnerColumn(), TextColumn(f"  {_safe(title)}"), BarColumn(),
                                  MofNCompleteColumn(), TextColumn("{task.fields[last]}"),
                                  TimeElapsedColumn(), console=self.console, transient=True)
        self._progress.start()
        self._task = self._progress.add_task(title, total=total, last="")

    def done(self, host: str, ok: bool) -> None:
        if self._progress is not None:
            mark = "[green]✓[/]" if ok else "[red]✗[/]"
            self._progress.update(self._task, advance=1, last=f"{mark} {_safe(host)}")

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def render_kubeconfig(report) -> None:
    """`kubeconfig`: the file on stdout when no -o/--merge was given (nothing else there);
    what was done, the expiry and where it went on stderr. A dry run prints its plan."""
    req = report.request
    if report.dry_run:
        render_plan(report.plan, err_console)
    elif req.output is None and req.merge is None and req.content is not None:
        import sys

        sys.stdout.write(req.content)
        sys.stdout.flush()
    who = f"user {req.user} (ClusterRole {req.role})" if req.user else "admin"
    lines = [f"kubeconfig: {who}, from {req.source or '?'}"]
    if req.expires is not None:
        lines.append(f"client certificate expires {req.expires.strftime('%Y-%m-%d %H:%M:%S UTC')}")
    if req.written is not None and not report.dry_run:
        lines.append(f"written to {req.written}" + (f" (context {req.context}: `kubectl config use-context "
                                                    f"{req.context}`)" if req.merge and req.context else ""))
    for line in lines:
        err_console.print(printable(line), markup=False, highlight=False)


def render_join(report, console: Console | None = None) -> None:
    """`gpuk8s join`: the hosts left alone (already nodes), the phases, and the outcome."""
    console = console or out_console()
    for name in report.already_nodes:
        console.print(Text(printable(f"= {name}: already a node (left alone)"), style="dim"))
    if render_phases(report, "join", console) and not report.dry_run:
        if report.failed_hosts:
            console.print(Text(f"joined except {printable(', '.join(report.failed_hosts))}: fix "
                               "and run `gpuk8s join` again", style="bold red"))
        elif report.joined:
            console.print(Text(printable(f"joined: {', '.join(report.joined)}"), style="bold green"))
        else:
            console.print(Text("nothing to join: every host is a node of the cluster", style="bold green"))


def render_reset(report, console: Console | None = None) -> None:
    """`reset`: the plan of a dry run, or what was done; the cause when a step failed."""
    console = console or out_console()
    if report.dry_run:
        render_plan(report.plan, console)
    if report.error:
        console.print(Text(f"failed: {printable(report.error, lines=True)}", style="bold red"), soft_wrap=True)
        if report.log_path:
            console.print(Text(f"full log (secrets redacted): {printable(report.log_path)}"), soft_wrap=True)
        return
    if report.dry_run:
        return
    names = report.request.hosts or ("every host",)
    if report.changed:
        console.print(Text(f"reset {printable(', '.join(names))}: {len(report.plan.changes)} changes; "
                           "`gpuk8s up` (or `gpuk8s join`) can take the hosts again", style="bold green"))
    else:
        console.print(Text(f"nothing to do: {printable(', '.join(names))} already reset", style="bold green"))
