"""A pytest-testinfra backend that runs every command through gpuk8s's own transport.

testinfra's modules (`host.service`, `host.file`, `host.package`, `host.sysctl`...) build shell
command strings (their arguments quoted with `shlex.quote` through testinfra's `%s` mechanism,
testinfra/backend/base.py `BaseBackend.quote`, pytest-testinfra 10.2.2) and hand them to
`backend.run`. This backend runs each one as a read through the runtime `gpuk8s.host.Host.read`:

    sh -c 'eval "$1"' gpuk8s-testinfra '<testinfra's command>'

built with `Cmd` (the script is fixed text; testinfra's command travels as its argument), so every
command is logged and redacted by the run log, bounded by the transport's timeouts, refused after
Ctrl-C (the gate), and runs on the host's one connection with the same host-key verification,
bastion and `sudo -n` as preflight and `up` (the transport adds `sudo -n` for non-root logins;
testinfra's own `sudo` wrapper, which would prompt, stays off).

A command that cannot run (the host is lost, the command timed out, the run was interrupted)
raises gpuk8s's TransportError out of the testinfra call; the check that made it reports FAIL.

Round trips: `prefetch` runs a list of commands known in advance (the check set lists what its
testinfra calls will send) in ONE round trip, concurrently on the host, each with its own exit
status, stdout and stderr (framed by a random marker, printed by one `cat`); `run` then answers those exact command strings from that batch and
sends only the others. A batch that cannot run (timeout, an odd answer) leaves nothing cached, so
every command then runs on its own, as if there were no batch; a lost host stays lost.

`system_info` is answered from the facts the probe gathered in this run (os-release ID,
VERSION_ID, VERSION_CODENAME, `uname -m`), which testinfra would otherwise read with three more
round trips (`uname -s`, `cat /etc/os-release`, `uname -m`: testinfra/modules/systeminfo.py).
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from testinfra.backend.base import BaseBackend, CommandResult
from testinfra.host import Host as TestinfraHost

from gpuk8s.shell import Cmd

if TYPE_CHECKING:
    from gpuk8s.facts import Facts
    from gpuk8s.host import Host

# testinfra's command is $1 of a fixed script: no value is ever spliced into the script itself.
# Both scripts first read their stdin to its end (a shell builtin: no process), so the host
# ends the session only after the transport's EOF: paramiko builds its EOF under the channel
# lock but sends it after, and a command that ends at once can have paramiko's reply to the
# host's CLOSE overtake it; OpenSSH then drops the whole connection ("ieof packet referred to
# nonexistent channel"), seen with many short commands on one connection. The commands
# themselves get /dev/null.
_EVAL = 'while read -r _; do :; done; eval "$1" </dev/null'
# The batch: $1 is a marker (random per batch), every other argument one testinfra command, run
# concurrently in a subshell of its own (stdin from /dev/null), its stdout, stderr and exit status
# kept in a temporary directory. Then ONE cat prints, per command in order: "MARKER N RC", its
# stdout, "\nMARKER stderr", its stderr, "\n"; last "MARKER end COUNT". No process per output
# (base64 per output cost as much as the commands themselves); a host that prints the marker can
# only break the framing, which then counts as no answer.
_BATCH = ('while read -r _; do :; done; m=$1; shift; t=$(mktemp -d) || exit 1; trap \'rm -rf -- "$t"\' EXIT; '
          'printf \'\\n%s stderr\\n\' "$m" >"$t/s"; printf \'\\n\' >"$t/z"; n=0; '
          'for c in "$@"; do n=$((n + 1)); '
          '{ ( eval "$c" ) </dev/null >"$t/$n.o" 2>"$t/$n.e"; '
          'printf \'%s %s %s\\n\' "$m" "$n" "$?" >"$t/$n.h"; } & done; wait; '
          'set --; i=0; while [ "$i" -lt "$n" ]; do i=$((i + 1)); '
          'set -- "$@" "$t/$i.h" "$t/$i.o" "$t/s" "$t/$i.e" "$t/z"; done; '
          '[ "$n" -eq 0 ] || cat -- "$@"; printf \'%s end %s\\n\' "$m" "$n"')


class Gpuk8sBackend(BaseBackend):
    """testinfra's view of one gpuk8s Host (its connection, log, gate and timeouts)."""

    NAME = "gpuk8s"

    def __init__(self, host: "Host", *, timeout: float | None = None, **kwargs: Any):
        super().__init__(host.name, **kwargs)
        self.gpuk8s_host = host
        self.timeout = timeout
        self.sudo = False   # the transport adds `sudo -n` (never a prompt) for non-root logins
        self._batch: dict[str, tuple[int, str, str]] = {}   # command -> (rc, stdout, stderr)
        self.sent: list[str] = []      # commands sent on their own (not answered from a batch)
        self.batched: list[str] = []   # commands answered from a batch

    def run(self, command: str, *args: str, **kwargs: Any) -> CommandResult:
        command = self.get_command(command, *args)
        hit = self._batch.get(command)
        if hit is not None:
            self.batched.append(command)
            return self.result(hit[0], self.encode(command), hit[1], hit[2])
        self.sent.append(command)
        res = self.gpuk8s_host.read(Cmd("sh", "-c", _EVAL, "gpuk8s-testinfra", command),
                                    timeout=self.timeout, check=False)
        return self.result(res.exit_status, self.encode(command), res.stdout, res.stderr)

    def prefetch(self, commands: list[tuple[str, ...]]) -> int:
        """Run (command, *args) tuples, as `run` would build them, in one round trip; returns how
        many answers were kept. Transport errors propagate (a lost host is lost for `run` too);
        an answer that cannot be parsed keeps nothing."""
        strings = list(dict.fromkeys(self.get_command(c, *a) for c, *a in commands))
        if not strings:
            return 0
        marker = "@@gpuk8s-" + secrets.token_hex(12)
        res = self.gpuk8s_host.read(Cmd("sh", "-c", _BATCH, "gpuk8s-testinfra", marker, *strings),
                                    timeout=self.timeout, check=False)
        answers = parse_batch(res.stdout, marker, len(strings)) if res.exit_status == 0 else None
        if answers is None:
            self.gpuk8s_host.log.write(self.hostname, "testinfra batch: no usable answer "
                                       f"(exit {res.exit_status}); commands run one by one")
            return 0
        self._batch.update(zip(strings, answers))
        return len(answers)

    def get_encoding(self) -> str:
        # The transport decodes output as UTF-8 (errors replaced); testinfra's default would run
        # python3 on the host to ask for its locale.
        return "utf-8"


def parse_batch(text: str, marker: str, count: int) -> list[tuple[int, str, str]] | None:
    """The batch's answers in order, or None unless all `count` are there, well formed."""
    out: list[tuple[int, str, str]] = []
    pos = 0
    for i in range(1, count + 1):
        head = f"{marker} {i} "
        if not text.startswith(head, pos):
            return None
        eol = text.find("\n", pos)
        rc_text = text[pos + len(head):eol] if eol >= 0 else ""
        if not rc_text.isdigit():
            return None
        sep = text.find(f"\n{marker} stderr\n", eol)
        nxt = f"\n{marker} {i + 1} " if i < count else f"\n{marker} end {count}\n"
        stop = text.find(nxt, sep + 1) if sep >= 0 else -1
        if sep < 0 or stop < 0:
            return None
        stdout = text[eol + 1:sep]
        stderr = text[sep + len(marker) + 9:stop]
        if marker in stdout or marker in stderr:
            return None
        out.append((int(rc_text), stdout, stderr))
        pos = stop + 1
    return out if text[pos:] == f"{marker} end {count}\n" else None


def testinfra_host(host: "Host", *, timeout: float | None = None) -> TestinfraHost:
    """A testinfra Host over a connected gpuk8s Host, its system_info taken from the host's facts."""
    backend = Gpuk8sBackend(host, timeout=timeout)
    th = TestinfraHost(backend)
    backend.set_host(th)
    if host.facts is not None:
        seed_system_info(th, host.facts)
    return th


def seed_system_info(th: TestinfraHost, facts: "Facts") -> None:
    """Fill testinfra's SystemInfo cache (the `sysinfo` cached_property) from the probe's facts:
    the same values testinfra parses from `uname -s`, /etc/os-release and `uname -m`."""
    info = th.system_info
    info.__dict__["sysinfo"] = {
        "type": "linux",
        "distribution": facts.os.id,
        "codename": facts.os.version_codename,
        "release": facts.os.version_id,
        "arch": facts.arch,
    }
