#!/usr/bin/env bash
# Make examples/call.pcap: real SIP traffic between two sipp instances on loopback,
# captured with tcpdump. Needs root (for tcpdump), sipp and tcpdump
# (apt-get install sip-tester tcpdump). The result is committed; run this to remake it.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-examples/call.pcap}
tmp=$(mktemp -d)
trap 'kill $uas_pid $tcpdump_pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
tcpdump -i lo -U -s 0 -w "$tmp/cap.pcap" 'udp port 15060 or udp port 15061' 2>"$tmp/tcpdump.log" &
tcpdump_pid=$!
sleep 1
sipp -sn uas -i 127.0.0.1 -p 15060 -bg -trace_err >/dev/null 2>&1 || true
uas_pid=$(pgrep -n -f 'sipp -sn uas -i 127.0.0.1 -p 15060' || true)
sleep 0.5
# 5 calls (INVITE, 100, 180, 200, ACK, BYE, 200), distinct Call-IDs
sipp -sn uac 127.0.0.1:15060 -i 127.0.0.1 -p 15061 -m 5 -r 5 -d 200 -timeout 20 >/dev/null 2>&1
sleep 1
kill "$tcpdump_pid"; wait "$tcpdump_pid" 2>/dev/null || true
[ -n "$uas_pid" ] && kill "$uas_pid" 2>/dev/null || true
mkdir -p "$(dirname "$out")"
cp "$tmp/cap.pcap" "$out"
echo "wrote $out"
