# gpuk8s probe: read-only. Prints sections, each "@@gpuk8s:NAME" on its own line followed by
# raw output that gpuk8s/facts/ parses. Arguments (gpuk8s/facts/probe.py probe_args): the
# control-plane endpoint host (may be empty), the Kubernetes state files to look for, "--",
# then the files gpuk8s manages to hash; gpuk8s/paths.py holds both lists.
# It reads the paths a real server has (/sys, /proc, /etc) so each fact can be checked by hand.
LC_ALL=C; export LC_ALL
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH; export PATH
ep=$1; [ $# -gt 0 ] && shift
# Optional "tcp:PORT" (connect to the endpoint from nodes of a running cluster) or "tcp!:PORT"
# (from every host: cluster.vip, whose address must be free before init); state files follow.
tcp=; case ${1-} in tcp:*|tcp!:*) tcp=$1; shift ;; esac
s() { printf '\n@@gpuk8s:%s\n' "$1"; }
f() { [ -r "$1" ] && cat "$1" 2>/dev/null; return 0; }
# Small files through the shell's own read: no process per file.
r() { [ -r "$1" ] || return 0; while IFS= read -r l || [ -n "$l" ]; do printf '%s\n' "$l"; done < "$1"; }
t() { if command -v timeout >/dev/null 2>&1; then timeout 15 "$@"; else "$@"; fi; }
probe() {
s probe; echo 1
s uid; while read -r k v _; do [ "$k" = Uid: ] && { printf '%s\n' "$v"; break; }; done < /proc/self/status
s os_release; if [ -r /etc/os-release ]; then r /etc/os-release; else r /usr/lib/os-release; fi
s uname; uname -rm  # one line: release, machine (uname's own order)
s hostname; r /proc/sys/kernel/hostname
# cgroup v2 has cgroup.controllers at its root (same answer as `stat -fc %T /sys/fs/cgroup`).
s cgroup; if [ -e /sys/fs/cgroup/cgroup.controllers ]; then echo cgroup2fs; elif [ -d /sys/fs/cgroup ]; then echo tmpfs; fi
s cpus
n=0; read -r online < /sys/devices/system/cpu/online 2>/dev/null || online=
IFS=,; for r in $online; do case $r in *-*) n=$((n + ${r#*-} - ${r%-*} + 1)) ;; *) n=$((n + 1)) ;; esac; done; unset IFS
if [ "$n" -gt 0 ]; then echo "$n"; else getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null; fi
s meminfo
while read -r k v u; do case $k in MemTotal:|SwapTotal:) printf '%s %s %s\n' "$k" "$v" "$u";; esac; done < /proc/meminfo
s swaps; r /proc/swaps
s fstab; r /etc/fstab
s swap_units
for u in /etc/systemd/system/*.swap /etc/systemd/system/*.wants/*.swap /run/systemd/system/*.swap /usr/lib/systemd/system/*.swap /lib/systemd/system/*.swap; do
  if [ -L "$u" ]; then printf '%s -> %s\n' "$u" "$(readlink "$u")"; elif [ -e "$u" ]; then printf '%s\n' "$u"; fi
done
if command -v ip >/dev/null 2>&1; then
  # One `ip` for links, addresses and IPv4 routes (each parser picks its own lines), one for IPv6.
  s links; net=$(printf 'link show\naddr show\nroute show\n' | ip -o -batch - 2>/dev/null); printf '%s\n' "$net"
  s addrs; printf '%s\n' "$net"
  s routes; printf '%s\n' "$net"; ip -o -6 route show 2>/dev/null
else  # no iproute2: the same facts from /sys and /proc
  s sys_net; grep -H '' /sys/class/net/*/address 2>/dev/null
  s fib_trie; f /proc/net/fib_trie
  s proc_route; f /proc/net/route
fi
s product_uuid; r /sys/class/dmi/id/product_uuid
s modules
[ -r /proc/modules ] && while read -r m _; do printf '%s\n' "$m"; done < /proc/modules
for m in /sys/module/*; do [ -e "$m" ] && printf '%s\n' "${m##*/}"; done
s filesystems; r /proc/filesystems
s sysctl
for k in net/ipv4/ip_forward net/ipv6/conf/all/forwarding net/bridge/bridge-nf-call-iptables net/bridge/bridge-nf-call-ip6tables; do
  v=; [ -r "/proc/sys/$k" ] && { read -r v < "/proc/sys/$k" || :; }  # no newline on 1-byte reads
  [ -n "$v" ] && printf '%s=%s\n' "$k" "$v"
done
s binaries
for b in ip iptables mount nsenter ethtool socat tc conntrack touch ebtables modprobe sysctl systemctl \
         containerd runc crictl kubeadm kubelet kubectl helm nvidia-smi nvidia-ctk mokutil lspci apt-get dnf yum \
         curl gpg; do
  command -v "$b" 2>/dev/null  # prints the path: no subshell per binary
done
s services
command -v systemctl >/dev/null 2>&1 && systemctl show -p Id,LoadState,ActiveState,UnitFileState \
  containerd.service kubelet.service firewalld.service ufw.service chronyd.service chrony.service \
  systemd-timesyncd.service ntpd.service ntp.service ntpsec.service docker.service \
  unattended-upgrades.service dnf-automatic.timer dnf-automatic-install.timer \
  NetworkManager.service 2>/dev/null
# timedatectl and systemctl ask D-Bus, whose calls time out on their own (25 s).
s timedatectl; command -v timedatectl >/dev/null 2>&1 && timedatectl show 2>/dev/null
s ufw_conf; r /etc/ufw/ufw.conf
# ss asks the kernel for listening sockets only; /proc/net/tcp walks every connection bucket.
s listen; ss -Hltn 2>/dev/null || cat /proc/net/tcp /proc/net/tcp6 2>/dev/null
s endpoint; [ -n "$ep" ] && getent ahosts "$ep" 2>/dev/null
# A TCP connect to the endpoint, 1 s at most (a free VIP never answers ARP: that is the wait).
s endpoint_tcp
case $tcp in
  tcp!:*) go=1 ;;
  tcp:*) go=; for p in "$@"; do [ "$p" = -- ] && break; case $p in */kubelet.conf) [ -e "$p" ] && go=1 ;; esac; done ;;
  *) go= ;;
esac
if [ -n "$go" ] && [ -n "$ep" ]; then
  if ! command -v bash >/dev/null 2>&1; then echo nobash
  elif ! command -v timeout >/dev/null 2>&1; then echo notimeout
  else e=$(timeout 1 bash -c ': <>"/dev/tcp/$0/$1"' "$ep" "${tcp#*:}" 2>&1); echo "rc=$?"; printf '%s\n' "$e"
  fi
fi
# Version queries are local and quick; only tools known to hang (nvidia-smi, mokutil) get a timeout.
s containerd_version; command -v containerd >/dev/null 2>&1 && containerd --version 2>&1
s containerd_config; f /etc/containerd/config.toml
s kubeadm_version; command -v kubeadm >/dev/null 2>&1 && kubeadm version -o short 2>&1
s kubelet_version; command -v kubelet >/dev/null 2>&1 && kubelet --version 2>&1
s kubectl_version; command -v kubectl >/dev/null 2>&1 && kubectl version --client 2>&1
s helm_version; command -v helm >/dev/null 2>&1 && helm version --short 2>&1
s pci; grep -H '' /sys/bus/pci/devices/*/vendor /sys/bus/pci/devices/*/device /sys/bus/pci/devices/*/class 2>/dev/null
s pci_driver
# A bound device is an entry /sys/bus/pci/drivers/DRIVER/ADDRESS: globs and reads, no process.
for d in /sys/bus/pci/drivers/*/[0-9a-f]*:*; do
  v=; [ -e "$d/vendor" ] && { read -r v < "$d/vendor" || :; }
  [ "$v" = 0x10de ] && { p=${d%/*}; printf '%s %s\n' "${d##*/}" "${p##*/}"; }
done
s lspci; command -v lspci >/dev/null 2>&1 && lspci -Dnn -d 10de: 2>/dev/null
s nvidia_smi
if command -v nvidia-smi >/dev/null 2>&1; then
  t nvidia-smi --query-gpu=index,pci.bus_id,name,driver_version,memory.total,mig.mode.current,pci.device_id,mig.mode.pending --format=csv,noheader 2>&1
  echo "rc=$?"
fi
s nvidia_version; r /proc/driver/nvidia/version; r /sys/module/nvidia/version
# nouveau settings in modprobe.d and APT's unattended-upgrade setting: one grep, "file:line"
s conf_grep; grep -rHsE '^[[:space:]]*(blacklist|options|install)[[:space:]]+nouveau|APT::Periodic::Unattended-Upgrade' \
  /etc/modprobe.d /run/modprobe.d /usr/lib/modprobe.d /lib/modprobe.d /etc/apt/apt.conf /etc/apt/apt.conf.d 2>/dev/null
s cmdline; r /proc/cmdline
s secure_boot
v=; for e in /sys/firmware/efi/efivars/SecureBoot-*; do [ -e "$e" ] && { v=$e; break; }; done
if [ -n "$v" ]; then printf 'efivar='; od -An -t u1 "$v" 2>/dev/null || echo
elif [ -d /sys/firmware/efi ]; then echo efi=yes
else echo efi=no; fi
[ -z "$v" ] && command -v mokutil >/dev/null 2>&1 && t mokutil --sb-state 2>&1
s auto_upgrades; [ -d /etc/apt ] && echo apt=yes
s cni; for c in /etc/cni/net.d/*; do [ -e "$c" ] && printf '%s\n' "${c##*/}"; done
s k8s_state; for p in "$@"; do [ "$p" = -- ] && break; [ -e "$p" ] && printf '%s\n' "$p"; done
s selinux; r /sys/fs/selinux/enforce
# Hashes of the files gpuk8s manages, so `up` knows what is current without asking again.
# The arguments after "--" that are files become the only arguments: each one is shifted off
# the front and, if present, appended, so a single sha256sum hashes them all.
s managed_files
m=; for p in "$@"; do
  shift
  if [ -n "$m" ]; then [ -f "$p" ] && set -- "$@" "$p"; elif [ "$p" = -- ]; then m=1; fi
done
[ $# -gt 0 ] && sha256sum -- "$@" 2>/dev/null
s end
}
# Collect everything, then write it at once: one large SSH packet instead of hundreds of small ones.
out=$(probe "$@" 2>/dev/null; echo x)
printf '%s' "${out%x}"
exit 0
