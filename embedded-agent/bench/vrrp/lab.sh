#!/bin/sh
# Lab for the VRRP benchmark: a bridge with no physical port in the root namespace and N
# network namespaces on it, subnet 10.98.K.0/24 (bridge .1, node i = .(i+1)). No default
# routes, root ip_forward untouched: nothing can leave the machine.
#   lab.sh up K N     lab.sh down K N
set -eu
cmd=$1 k=$2 n=$3
br=khvbr$k
case $cmd in
up)
    ip link add "$br" type bridge
    ip addr add "10.98.$k.1/24" dev "$br"
    ip link set "$br" up
    i=1
    while [ "$i" -le "$n" ]; do
        ns=khv$k-$i
        ip netns add "$ns"
        ip link add "khv${k}h$i" type veth peer name eth0 netns "$ns"
        ip link set "khv${k}h$i" master "$br" up
        ip -n "$ns" addr add "10.98.$k.$((i + 1))/24" dev eth0
        ip -n "$ns" link set lo up
        ip -n "$ns" link set eth0 up
        ip -n "$ns" route add 224.0.0.0/4 dev eth0
        i=$((i + 1))
    done
    ;;
down)
    i=1
    while [ "$i" -le "$n" ]; do
        # Deleting the host side first is synchronous; `ip netns del` alone is not.
        ip link del "khv${k}h$i" 2>/dev/null || true
        ip netns del "khv$k-$i" 2>/dev/null || true
        i=$((i + 1))
    done
    ip link del "$br" 2>/dev/null || true
    ;;
esac
