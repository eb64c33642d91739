#!/bin/sh
# Installs what the network-namespace chaos harness needs (tests/chaos/netns.py):
# iproute2 (ip, ss, tc, bridge) and nftables, from Debian's packages. Root only;
# does nothing when the commands are already there.
set -eu
missing=""
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
command -v ss >/dev/null 2>&1 || missing="$missing iproute2"
command -v nft >/dev/null 2>&1 || missing="$missing nftables"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "install-tools.sh: need root to install:$missing" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-tools.sh: no apt-get; install$missing by hand" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $(echo $missing | tr ' ' '\n' | sort -u)
