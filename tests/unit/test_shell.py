"""Cmd quoting: what reaches the shell is exactly the values given, secrets masked for people."""

import subprocess

import pytest

from gpuk8s.shell import Cmd, Secret

NASTY = ["plain", "two words", "it's", '"dq"', "$(touch /tmp/pwned)", "`id`", "a;b|c&d",
         "new\nline", "*", "~root", "", "--flag", "back\\slash", "ünï", "${HOME}"]


@pytest.mark.parametrize("value", NASTY)
def test_rendered_argument_reaches_shell_unchanged(value):
    cmd = Cmd("printf", "%s", value)
    out = subprocess.run(["sh", "-c", cmd.render()], capture_output=True, check=True).stdout
    assert out.decode() == value


@pytest.mark.parametrize("value", NASTY)
def test_sudo_wrapping_keeps_argument_intact(value):
    inner = Cmd("printf", "%s", value)
    wrapped = inner.sudo().render()
    assert wrapped.startswith("sudo -n -- sh -c ")
    # Drop the sudo prefix and run the rest: the nested quoting must survive two shells.
    out = subprocess.run(["sh", "-c", wrapped[len("sudo -n -- "):]], capture_output=True, check=True)
    assert out.stdout.decode() == value


def test_secret_masked_everywhere_but_render():
    c = Cmd("kubeadm", "join", "--token", Secret("abcdef.0123456789abcdef"))
    assert "abcdef" not in c.masked() and "abcdef" not in str(c) and "abcdef" not in repr(c)
    assert c.masked().endswith("***")
    assert c.render().endswith("abcdef.0123456789abcdef")
    assert "abcdef" not in c.sudo().masked()
    assert str(Secret("x")) == "***" and "x'" not in repr(Secret("x"))


def test_operators_and_redirects_are_whitelisted():
    c = Cmd("true").then("&&", Cmd("echo", "ok")).redirect(">", "/tmp/a b")
    assert c.render() == "true && echo ok > '/tmp/a b'"
    with pytest.raises(ValueError):
        Cmd("true").then("; rm -rf /;", Cmd("true"))
    with pytest.raises(ValueError):
        Cmd("true").redirect(">$(id)")


def test_rejects_unknown_argument_types():
    with pytest.raises(TypeError):
        Cmd("echo", 1.5)  # type: ignore[arg-type]
