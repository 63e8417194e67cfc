# khactl host probe: read-only. Prints one fact per line: "<kind> <key> <value>".
# Values arrive as positional arguments ("sysctl:PATH" under /proc/sys, "file:PATH",
# "conf:DIR" for every *.conf file in DIR, "hash:PATH", "server:KUBECONFIG");
# nothing from the inventory is ever spliced into this text.
set -u
if [ -r /etc/os-release ]; then . /etc/os-release; fi
echo "os id ${ID:-unknown}"
echo "os version ${VERSION_ID:-unknown}"
echo "os arch $(uname -m)"
# The init system that booted the host (sd_booted(3)'s test; OpenRC's run dir), before the
# tools that happen to be installed: a host can have both packages.
if [ -d /run/systemd/system ]; then echo "os init systemd"
elif [ -e /run/openrc/softlevel ]; then echo "os init openrc"
elif command -v systemctl >/dev/null 2>&1; then echo "os init systemd"
elif command -v openrc-run >/dev/null 2>&1 || command -v rc-service >/dev/null 2>&1; then echo "os init openrc"
else echo "os init unknown"; fi
echo "os uid $(id -u)"
echo "os hostname $(cat /proc/sys/kernel/hostname)"
if [ -r /etc/machine-id ]; then echo "os machine-id $(cat /etc/machine-id)"; fi
echo "swap active $(($(wc -l < /proc/swaps) - 1))"
if grep -qw overlay /proc/filesystems; then echo "module overlay present"; else echo "module overlay absent"; fi
if [ -d /proc/sys/net/bridge ]; then echo "module br_netfilter present"; else echo "module br_netfilter absent"; fi
if command -v modprobe >/dev/null 2>&1 && [ -e /proc/modules ]; then echo "os modprobe yes"; else echo "os modprobe no"; fi
ip -o -4 addr show 2>/dev/null | while read -r _ dev _ addr _; do echo "addr $dev $addr"; done
# SELinux and firewalld (RHEL family): what the tools print, parsed by facts/rhel.rs.
if command -v getenforce >/dev/null 2>&1; then echo "selinux getenforce $(getenforce 2>/dev/null)"
elif [ -r /sys/fs/selinux/enforce ]; then echo "selinux enforce $(cat /sys/fs/selinux/enforce)"
else echo "selinux absent"; fi
if command -v firewall-cmd >/dev/null 2>&1; then
  # "running", or "not running" on stderr with exit 252.
  echo "firewalld state $(firewall-cmd --state 2>&1 | head -n 1)"
  if command -v systemctl >/dev/null 2>&1; then echo "firewalld enabled $(systemctl is-enabled firewalld 2>/dev/null | head -n 1)"; fi
  if firewall-cmd --state >/dev/null 2>&1; then
    echo "firewalld ports $(firewall-cmd --permanent --list-ports 2>/dev/null)"
    echo "firewalld protocols $(firewall-cmd --permanent --list-protocols 2>/dev/null)"
  fi
elif command -v systemctl >/dev/null 2>&1 && systemctl cat firewalld.service >/dev/null 2>&1; then
  echo "firewalld active $(systemctl is-active firewalld 2>/dev/null | head -n 1)"
  echo "firewalld enabled $(systemctl is-enabled firewalld 2>/dev/null | head -n 1)"
fi
for a in "$@"; do
  kind=${a%%:*}; val=${a#*:}
  case $kind in
    sysctl)
      p=/proc/sys/$val
      if [ -r "$p" ]; then echo "sysctl $val $(tr '\t\n' '  ' < "$p" | sed 's/ *$//')"; else echo "sysctl $val -"; fi ;;
    file)
      if [ -f "$val" ]; then echo "file $val =$(base64 -w0 < "$val")"; else echo "file $val -"; fi ;;
    version)
      if command -v "$val" >/dev/null 2>&1; then
        case $val in
          kubeadm) v=$(kubeadm version -o short 2>/dev/null) ;;
          kubelet) v=$(kubelet --version 2>/dev/null) ;;
          kubectl) v=$(kubectl version --client 2>/dev/null | head -n 1) ;;
          *) v=$("$val" --version 2>/dev/null | head -n 1) ;;
        esac
        echo "version $val ${v:-unknown}"
      else echo "version $val -"; fi ;;
    port)
      # A LISTEN socket (st 0A) on that local port, any address, IPv4 or IPv6.
      hex=$(printf '%04X' "$val")
      # Only the tables there are: without IPv6 there is no tcp6, and awk would stop early.
      tables=; for t in /proc/net/tcp /proc/net/tcp6; do [ -r "$t" ] && tables="$tables $t"; done
      # shellcheck disable=SC2086
      if [ -n "$tables" ] && awk -v p="$hex" '$4 == "0A" && substr($2, index($2, ":") + 1) == p { f = 1 } END { exit !f }' \
        $tables; then echo "port $val listen"; else echo "port $val free"; fi ;;
    dir)
      if [ ! -d "$val" ]; then echo "dir $val absent"
      elif [ -z "$(ls -A "$val" 2>/dev/null)" ]; then echo "dir $val empty"
      else echo "dir $val full"; fi ;;
    socket)
      if [ -S "$val" ]; then echo "socket $val yes"; else echo "socket $val no"; fi ;;
    server)
      # A kubeconfig's first server URL and nothing else of it (it may hold a client key).
      s=; if [ -f "$val" ]; then s=$(sed -n 's/^[[:space:]]*server:[[:space:]]*//p' "$val" | head -n 1 | tr -d ' \t\r"'"'"); fi
      echo "server $val ${s:--}" ;;
    conf)
      for f in "$val"/*.conf; do
        if [ -f "$f" ]; then echo "file $f =$(base64 -w0 < "$f")"; fi
      done ;;
  esac
done
# Digests: one sha256sum and one stat over every present file ("sum HASH  PATH",
# "mode MODE PATH"), a "hash PATH -" line for each absent one.
digests() {
  for a in "$@"; do
    shift
    case $a in
      hash:*) p=${a#hash:}; if [ -f "$p" ]; then set -- "$@" "$p"; else echo "hash $p -"; fi ;;
    esac
  done
  [ "$#" -gt 0 ] || return 0
  sha256sum -- "$@" | sed 's/^/sum /'
  stat -c 'mode %a %n' -- "$@"
}
digests "$@"
# Last, so the node's clock is read just before the answer travels back: khactl compares it
# with the time the answer arrives (the one-way delay is the error, milliseconds).
echo "os clock $(date +%s.%N)"
