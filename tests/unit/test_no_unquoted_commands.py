"""Rule 1 of docs/architecture.md: remote commands come only from Cmd.

Scans the package source: nothing but a Cmd reaches Transport.run / exec_command, no
formatted string is passed to them, and only the transports start processes or channels.
"""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "gpuk8s"


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            yield node


def _is_formatted(node) -> bool:
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return True
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def test_no_string_reaches_run():
    offenders = []
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for call in _calls(tree):
            if call.func.attr in ("run", "exec_command") and call.args and _is_formatted(call.args[0]):
                offenders.append(f"{path.relative_to(PKG)}:{call.lineno}")
    assert not offenders, f"formatted strings passed to run/exec_command: {offenders}"


def test_only_transports_start_processes_or_channels():
    allowed = {"transport/ssh.py": {"exec_command"}, "transport/local.py": {"subprocess"}}
    offenders = []
    for path in PKG.rglob("*.py"):
        rel = str(path.relative_to(PKG))
        text = path.read_text()
        for marker in ("exec_command", "subprocess", "os.system", "os.popen"):
            if marker in text and marker not in allowed.get(rel, set()):
                offenders.append(f"{rel}: {marker}")
    assert not offenders, offenders


def test_exec_command_sends_a_rendered_cmd():
    text = (PKG / "transport" / "ssh.py").read_text()
    tree = ast.parse(text)
    args = [c.args[0] for c in _calls(tree) if c.func.attr == "exec_command"]
    assert args and all(isinstance(a, ast.Call) and isinstance(a.func, ast.Attribute)
                        and a.func.attr == "render" for a in args)
