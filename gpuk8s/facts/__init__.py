"""Host facts: the probe script sent once per host, and pure parsers of its output.

`parse_probe(text)` turns the probe's sectioned output into a `Facts` object. Every parser
tolerates missing sections and odd real-world output (no VERSION_ID, no lspci, nvidia-smi
failing without a driver, non-GPU NVIDIA functions on the bus).

model: the data classes; system, network, runtime, gpu: the parsers by area; probe: the
script, its command line and the section -> parser table. The names below are re-exported
so `from gpuk8s.facts import X` keeps working.
"""

from gpuk8s.facts.gpu import (NVIDIA_DEVICE_NAMES, NVIDIA_VENDOR, parse_nouveau_blacklist,
                              parse_nvidia_module_type, parse_nvidia_smi, parse_nvidia_version,
                              parse_pci)
from gpuk8s.facts.model import GPU, ContainerdConfig, Facts, OSInfo
from gpuk8s.facts.network import (parse_addrs, parse_fib_trie, parse_getent, parse_links,
                                  parse_listen, parse_proc_route, parse_routes, parse_sys_net,
                                  parse_ufw_conf)
from gpuk8s.facts.probe import (SECTION_PREFIX, gather_facts, parse_probe, probe_command,
                                probe_script, split_sections)
from gpuk8s.facts.runtime import (parse_containerd_config, parse_containerd_version,
                                  parse_kube_version)
from gpuk8s.facts.system import (parse_auto_upgrades, parse_binaries, parse_cgroup,
                                 parse_fstab_swap, parse_meminfo, parse_modules,
                                 parse_os_release, parse_secure_boot, parse_services,
                                 parse_swap_units, parse_swaps, parse_sysctls, parse_timedatectl,
                                 parse_uname, split_conf_grep)
from gpuk8s.facts.text import parse_kv
from gpuk8s.paths import MANAGED_FILES

__all__ = [
    "ContainerdConfig", "Facts", "GPU", "MANAGED_FILES", "NVIDIA_DEVICE_NAMES", "NVIDIA_VENDOR",
    "OSInfo", "SECTION_PREFIX", "gather_facts", "parse_addrs", "parse_auto_upgrades",
    "parse_binaries", "parse_cgroup", "parse_containerd_config", "parse_containerd_version",
    "parse_fib_trie", "parse_fstab_swap", "parse_getent", "parse_kube_version", "parse_kv",
    "parse_links", "parse_listen", "parse_meminfo", "parse_modules", "parse_nouveau_blacklist",
    "parse_nvidia_module_type", "parse_nvidia_smi", "parse_nvidia_version", "parse_os_release",
    "parse_pci", "parse_probe", "parse_proc_route", "parse_routes", "parse_secure_boot",
    "parse_services", "parse_swap_units", "parse_swaps", "parse_sys_net", "parse_sysctls",
    "parse_timedatectl", "parse_ufw_conf", "parse_uname", "probe_command", "probe_script",
    "split_conf_grep", "split_sections",
]
