"""Rule 1 of docs/architecture.md: remote commands come only from Cmd.

Scans the package source: nothing but a Cmd reaches Transport.run / exec_command, no
formatted string is passed to them, only the transports start processes or channels, and every
`sh -c` script is fixed text (values travel as its positional arguments).
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


# --------------------------------------------------------------------------- sh -c scripts

SHELLS = {"sh", "/bin/sh", "bash", "/bin/bash"}


def _is_literal(node) -> bool:
    """A string literal, or literals joined with + (implicit concatenation is one Constant)."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    return (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add)
            and _is_literal(node.left) and _is_literal(node.right))


def _string_constants(tree: ast.Module) -> set[str]:
    """Module-level names bound once, to a literal, and never rebound anywhere in the module."""
    literal = {}
    for stmt in tree.body:
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)):
            literal[stmt.targets[0].id] = _is_literal(stmt.value)
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value:
            literal[stmt.target.id] = _is_literal(stmt.value)
    stores: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            stores[node.id] = stores.get(node.id, 0) + 1
    return {name for name, ok in literal.items() if ok and stores.get(name) == 1}


def _is_cmd(call: ast.Call) -> bool:
    """A call of Cmd(...) or module.Cmd(...)."""
    f = call.func
    return ((isinstance(f, ast.Name) and f.id == "Cmd")
            or (isinstance(f, ast.Attribute) and f.attr == "Cmd"))


def _sh_c_scripts(tree: ast.Module):
    """(line, script node) for every `Cmd(..., "sh", "-c", SCRIPT, ...)`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _is_cmd(node):
            args = node.args
            for i in range(len(args) - 2):
                if (isinstance(args[i], ast.Constant) and args[i].value in SHELLS
                        and isinstance(args[i + 1], ast.Constant) and args[i + 1].value == "-c"):
                    yield node.lineno, args[i + 2]


def _script_is_constant(script, constants: set[str]) -> bool:
    """A literal, a module-level string constant, or Nested(cmd) (Cmd.sudo(): quoted per word)."""
    if _is_literal(script) or (isinstance(script, ast.Name) and script.id in constants):
        return True
    return (isinstance(script, ast.Call) and isinstance(script.func, ast.Name)
            and script.func.id == "Nested")


def test_sh_c_scripts_are_constants():
    """Values reach an `sh -c` script only as "$1", "$2"...: the script itself is fixed text."""
    offenders, seen = [], 0
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        constants = _string_constants(tree)
        for line, script in _sh_c_scripts(tree):
            seen += 1
            if not _script_is_constant(script, constants):
                offenders.append(f"{path.relative_to(PKG)}:{line}: {ast.unparse(script)}")
    assert seen, "no Cmd(\"sh\", \"-c\", ...) found: the scan is broken"
    assert not offenders, f"sh -c scripts that are not string constants: {offenders}"


def test_sh_c_scan_refuses_built_scripts():
    tree = ast.parse(
        'OK = "echo " "$1"\nPLUS = "a" + "b"\nBUILT = "rm " + path\nTWICE = "x"\nTWICE = y\n'
        'def f(v):\n'
        '    local = "echo"\n'
        '    return [Cmd("sh", "-c", OK, "n", v), Cmd("sh", "-c", PLUS), Cmd("sh", "-c", "true"),\n'
        '            Cmd("sh", "-c", BUILT), Cmd("sh", "-c", TWICE),\n'
        '            Cmd("sh", "-c", f"echo {v}"),\n'
        '            Cmd("sudo", "bash", "-c", local), Cmd("sh", "-c", "echo " + v),\n'
        '            Cmd("sudo", "sh", "-c", Nested(inner))]\n')
    constants = _string_constants(tree)
    verdicts = {ast.unparse(s): _script_is_constant(s, constants) for _, s in _sh_c_scripts(tree)}
    assert verdicts == {"OK": True, "PLUS": True, "'true'": True, "Nested(inner)": True,
                        "BUILT": False, "TWICE": False, "f'echo {v}'": False, "local": False,
                        "'echo ' + v": False}
