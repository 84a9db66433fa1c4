"""gpuk8s against what each real containerd release prints for `containerd config default`.

tests/unit/data/containerd-default-<release>.toml are the outputs of containerd built from those
release tags (each file's header says how and from which source files). They pin down what the
product must cope with: config version 2 (1.7), 3 (2.0-2.2) or 4 (2.3); runc's options table with
SystemdCgroup = false, or without the key at all (2.0.0-2.0.6, 2.1.0-2.1.4); cni.bin_dir or
bin_dirs (2.1+); imports = [] or the conf.d glob (2.2+); the sandbox image's key and table.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import tomli_w

from gpuk8s.facts.runtime import parse_containerd_config
from gpuk8s.phases.prepare import containerd_config_ok
from gpuk8s.render import placeholders
from gpuk8s.render.containerd import containerd_config
from gpuk8s.render.gpu import CONTAINERD_IMPORTS_GLOB
from gpuk8s.versions import MATRIX, cri_plugins, native_config_version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

DATA = Path(__file__).parent / "data"
RELEASE = MATRIX["1.36"]
CONF_D = "/etc/containerd/conf.d/*.toml"

# What each release's output says, read off the source at its tag (see the files' headers):
# release: (config version, SystemdCgroup in runc options (None: no key), sandbox image,
#           imports, the CNI key holding /opt/cni/bin)
TRUTH = {
    "1.7.34": (2, False, "registry.k8s.io/pause:3.8", [], "bin_dir"),
    "2.0.6": (3, None, "registry.k8s.io/pause:3.10", [], "bin_dir"),
    "2.0.11": (3, False, "registry.k8s.io/pause:3.10", [], "bin_dir"),
    "2.1.4": (3, None, "registry.k8s.io/pause:3.10", [], "bin_dirs"),
    "2.1.9": (3, False, "registry.k8s.io/pause:3.10", [], "bin_dirs"),
    "2.2.7": (3, False, "registry.k8s.io/pause:3.10.1", [CONF_D], "bin_dirs"),
    "2.3.4": (4, False, "registry.k8s.io/pause:3.10.2", [CONF_D], "bin_dirs"),
}
RELEASES = sorted(TRUTH, key=lambda v: tuple(int(x) for x in v.split(".")))


def _file(release: str) -> str:
    return (DATA / f"containerd-default-{release}.toml").read_text()


def _real(release: str) -> str:
    """The output as containerd prints it: the file without its header comment."""
    return "".join(ln for ln in _file(release).splitlines(keepends=True)
                   if not ln.startswith("#")).lstrip("\n")


def _runtime(data: dict, version: int) -> dict:
    return data["plugins"][cri_plugins(version).runtime]


def _runc_options(data: dict, version: int) -> dict:
    return _runtime(data, version)["containerd"]["runtimes"]["runc"]["options"]


def _sandbox(data: dict, version: int) -> str:
    cri = cri_plugins(version)
    d = data["plugins"][cri.images]
    for k in cri.sandbox_image:
        d = d[k]
    return d


def _paths(d: dict, prefix: tuple = ()) -> set[tuple]:
    out = set()
    for k, v in d.items():
        out.add(prefix + (k,))
        if isinstance(v, dict):
            out |= _paths(v, prefix + (k,))
    return out


def test_every_release_has_its_fixture_and_only_those():
    names = sorted(p.name for p in DATA.glob("containerd-default-*.toml"))
    assert names == sorted(f"containerd-default-{v}.toml" for v in TRUTH)


@pytest.mark.parametrize("release", RELEASES)
def test_fixture_says_where_it_came_from(release):
    header = " ".join(ln[1:].strip() for ln in _file(release).splitlines() if ln.startswith("#"))
    assert f"v{release} tag of github.com/containerd/containerd" in header
    assert "cri/config/config_unix.go" in header and "cmd/containerd/command/config.go" in header


@pytest.mark.parametrize("release", RELEASES)
def test_fixture_matches_what_the_source_says(release):
    """The captured text agrees with the source read at the tag (TRUTH), through gpuk8s's parser."""
    version, systemd, sandbox, imports, cni_key = TRUTH[release]
    data = tomllib.loads(_real(release))
    cfg = parse_containerd_config(_real(release))
    assert (cfg.version, cfg.systemd_cgroup, cfg.sandbox_image, list(cfg.imports)) == (
        version, systemd, sandbox, imports)
    assert not cfg.systemd_cgroup_misplaced and not cfg.cri_disabled
    assert ("SystemdCgroup" in _runc_options(data, version)) is (systemd is not None)
    assert _runtime(data, version)["cni"][cni_key] in ("/opt/cni/bin", ["/opt/cni/bin"])
    # 2.3 (version 4) has no top-level server tables; the others do.
    assert ("grpc" in data) is (version < 4)
    assert ("io.containerd.server.v1.grpc" in data["plugins"]) is (version == 4)


@pytest.mark.parametrize("release", RELEASES)
def test_offline_default_is_the_real_output_of_that_release(release):
    """A dry run or offline render assumes exactly what that containerd prints."""
    assert placeholders.containerd_default(release) == _real(release)


@pytest.mark.parametrize("version,release", [
    ("1.7.27", "1.7.34"), ("1.7", "1.7.34"), ("1.6.30", "1.7.34"),
    ("2.0.0", "2.0.6"), ("2.0.6", "2.0.6"), ("2.0.7", "2.0.11"), ("2.0", "2.0.11"),
    ("2.1.0", "2.1.4"), ("2.1.4", "2.1.4"), ("2.1.5", "2.1.9"), ("2.1", "2.1.9"), ("v2.1.4", "2.1.4"),
    ("2.2.0", "2.2.7"), ("2.2", "2.2.7"), ("2.3.0", "2.3.4"), ("2.3", "2.3.4"), ("2.4.1", "2.3.4"),
])
def test_offline_default_per_release_range(version, release):
    """Boundaries inside a minor: SystemdCgroup appears in v2.0.7 and v2.1.5 (56cde7d2c); a
    version without a patch (the matrix's "2.1") is the newest patch, which apt installs."""
    assert placeholders.containerd_default(version) == _real(release)
    assert native_config_version(version) == TRUTH[release][0]


@pytest.mark.parametrize("release", RELEASES)
def test_render_of_each_real_default_is_kubernetes_ready(release):
    version, _systemd, _image, imports, cni_key = TRUTH[release]
    text = containerd_config(_real(release), RELEASE, release)
    data = tomllib.loads(text)
    cfg = parse_containerd_config(text)
    assert (cfg.version, cfg.systemd_cgroup, cfg.cri_disabled, cfg.sandbox_image) == (
        version, True, False, RELEASE.pause_image)
    assert not cfg.systemd_cgroup_misplaced
    assert _runc_options(data, version)["SystemdCgroup"] is True
    # added where the default lacks it, never twice
    assert len(re.findall(r"^\s*SystemdCgroup\s*=", text, re.M)) == 1
    assert _sandbox(data, version) == RELEASE.pause_image
    # The release's own imports stay; the toolkit's drop-in glob is there exactly once.
    assert data["imports"][:len(imports)] == imports
    assert data["imports"].count(CONTAINERD_IMPORTS_GLOB) == 1
    cni = _runtime(data, version)["cni"]
    assert cni["conf_dir"] == "/etc/cni/net.d"
    if cni_key == "bin_dirs":
        assert cni["bin_dirs"] == ["/opt/cni/bin"] and cni["bin_dir"] == ""
    else:
        assert cni["bin_dir"] == "/opt/cni/bin" and "bin_dirs" not in cni
    assert ("grpc" in data) is (version < 4)


@pytest.mark.parametrize("release", RELEASES)
def test_render_keeps_every_table_and_key_of_the_default(release):
    version = TRUTH[release][0]
    before = tomllib.loads(_real(release))
    after = tomllib.loads(containerd_config(_real(release), RELEASE, release))
    assert _paths(before) <= _paths(after)
    added = _paths(after) - _paths(before)
    options = ("plugins", cri_plugins(version).runtime, "containerd", "runtimes", "runc", "options")
    assert added <= {options + ("SystemdCgroup",)}
    assert before["plugins"].keys() == after["plugins"].keys()


@pytest.mark.parametrize("release", RELEASES)
def test_render_is_idempotent_and_then_compliant(release):
    text = containerd_config(_real(release), RELEASE, release)
    assert containerd_config(text, RELEASE, release, current_toml=text) == text
    ctx = SimpleNamespace(release=RELEASE)
    facts = SimpleNamespace(containerd=parse_containerd_config(text))
    assert containerd_config_ok(ctx, facts, release, gpu=True)


@pytest.mark.parametrize("release", RELEASES)
def test_the_real_default_itself_is_never_compliant(release):
    """Every release's default has SystemdCgroup false or absent: `up` must rewrite it."""
    ctx = SimpleNamespace(release=RELEASE)
    facts = SimpleNamespace(containerd=parse_containerd_config(_real(release)))
    assert not containerd_config_ok(ctx, facts, release, gpu=False)


@pytest.mark.parametrize("release", RELEASES)
def test_dry_run_render_equals_the_wet_run_render(release):
    """Offline (snapshot) and live (the host's `containerd config default`) give the same file."""
    offline = containerd_config(placeholders.containerd_default(release), RELEASE, release)
    assert offline == containerd_config(_real(release), RELEASE, release)


@pytest.mark.parametrize("old,new", [("1.7.34", "2.1.4"), ("2.1.9", "2.3.4"), ("2.2.7", "2.3.4")])
def test_upgrade_rewrites_in_the_new_native_version(old, new):
    """A file written for the old release, given as the default of a newer one (another config
    version), is replaced by the snapshot of the new release: never a v2/v3 file for 2.3."""
    native = TRUTH[new][0]
    current = containerd_config(_real(old), RELEASE, old)
    data = tomllib.loads(containerd_config(current, RELEASE, new, current_toml=current))
    assert data["version"] == native
    assert _runc_options(data, native)["SystemdCgroup"] is True
    if native == 4:
        assert "grpc" not in data and "ttrpc" not in data
        assert data["plugins"]["io.containerd.server.v1.grpc"]["address"] == \
            "/run/containerd/containerd.sock"


def test_toolkit_runtime_of_a_version_3_file_survives_the_move_to_2_3():
    """2.2 -> 2.3: version 4 keeps CRI's tables, so the NVIDIA runtime nvidia-ctk added to the
    version 3 file, and its imports, are kept (kubernetes-sigs/kubespray#12277)."""
    current = tomllib.loads(containerd_config(_real("2.2.7"), RELEASE, "2.2.7"))
    runtimes = _runtime(current, 3)["containerd"]["runtimes"]
    runtimes["nvidia"] = {"runtime_type": "io.containerd.runc.v2",
                          "options": {"BinaryName": "/usr/bin/nvidia-container-runtime",
                                      "SystemdCgroup": True}}
    current["imports"] = [*current["imports"], "/etc/containerd/extra.toml"]
    data = tomllib.loads(containerd_config(_real("2.3.4"), RELEASE, "2.3.4",
                                           current_toml=tomli_w.dumps(current)))
    assert data["version"] == 4
    nvidia = _runtime(data, 4)["containerd"]["runtimes"]["nvidia"]
    assert nvidia["options"]["BinaryName"] == "/usr/bin/nvidia-container-runtime"
    assert "/etc/containerd/extra.toml" in data["imports"]
    assert data["imports"].count(CONF_D) == 1


def test_a_version_4_current_file_is_not_merged_into_a_version_3_render():
    """Downgrade 2.3 -> 2.2: a version 4 file is not read for runtimes (2.2 refuses it)."""
    current = tomllib.loads(containerd_config(_real("2.3.4"), RELEASE, "2.3.4"))
    _runtime(current, 4)["containerd"]["runtimes"]["nvidia"] = {"runtime_type": "x"}
    data = tomllib.loads(containerd_config(_real("2.2.7"), RELEASE, "2.2.7",
                                           current_toml=tomli_w.dumps(current)))
    assert data["version"] == 3 and "nvidia" not in _runtime(data, 3)["containerd"]["runtimes"]


def test_shipped_snapshots_are_exactly_the_fixtures():
    """templates/containerd/*.toml: one per release range, each byte for byte a captured output."""
    from gpuk8s.render.base import template_text
    shipped = {name for _first, name in placeholders._CONTAINERD_DEFAULTS}
    seen = set()
    for release in RELEASES:
        name = placeholders.containerd_default_name(release)
        assert template_text(name) == _real(release)
        seen.add(name)
    assert seen == shipped
    assert all(re.fullmatch(r"containerd/default-[\d.]+\.toml", n) for n in shipped)


def test_dry_run_over_an_old_containerd_shows_the_file_of_the_release_up_installs(tmp_path):
    """containerd 1.7 on a 1.36 host: `up` installs 2.1 and writes its version 3 file; the dry
    run must show that file (the 2.1 snapshot), not a version 2 file for the old binary."""
    from gpuk8s.actions.up import run_up
    from gpuk8s.inventory import ClusterSpec, HostSpec, Inventory, SSHSettings
    from gpuk8s.phases.base import RunOptions
    from gpuk8s.render import ClusterSecrets
    from gpuk8s.runlog import RunLog
    from gpuk8s.shell import Secret
    from tests.unit.fake import bare_probe, opener

    old = containerd_config(_real("1.7.34"), RELEASE, "1.7.27")      # compliant for 1.7
    probe = bare_probe("w-1", 0, "10.0.0.21", swap=False)
    probe = probe.replace("@@gpuk8s:containerd_version\n\n", "@@gpuk8s:containerd_version\n"
                          "containerd containerd.io 1.7.27 05044ec0a9a75232cad458027ca83437aae3f4da\n")
    probe = probe.replace("@@gpuk8s:containerd_config\n\n", "@@gpuk8s:containerd_config\n" + old + "\n")
    probe = probe.replace("\n@@gpuk8s:binaries\n", "\n@@gpuk8s:binaries\ncontainerd=/usr/bin/containerd\n")
    inv = Inventory(path="inv.yaml", hosts=(HostSpec(name="w-1", address="10.0.0.21", roles=("control-plane",),
                                                     ssh=SSHSettings(user="root")),),
                    cluster=ClusterSpec(name="t", control_plane_endpoint="k8s-api.example.com:6443"))
    calls: list = []
    report = run_up(inv, RunOptions(dry_run=True, kubeconfig_path=tmp_path / "kc"), log=RunLog(None),
                    open_transport=opener({"w-1": probe}, calls, read_exit=1),
                    secrets=ClusterSecrets(Secret("abcdef.0123456789abcdef"), Secret("f" * 64)))
    assert inv.release.containerd == "2.1" and not inv.release.accepts_containerd("1.7.27")
    files = [f for c in report.plan.changes for f in c.files if f.path == "/etc/containerd/config.toml"]
    assert len(files) == 1
    cfg = parse_containerd_config(files[0].content)
    assert (cfg.version, cfg.systemd_cgroup, cfg.sandbox_image) == (3, True, inv.release.pause_image)
    assert "containerd 2.1.9" not in files[0].content  # the header names the release asked for
    assert "(containerd 2.1, config version 3)" in files[0].content
