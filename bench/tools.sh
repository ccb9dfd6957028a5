#!/usr/bin/env bash
# The Debian tools the benchmarks drive: wrk (the HTTP load), valgrind (callgrind's instruction
# counts) and strace (system calls per delivery). Run as root: bash bench/tools.sh
set -euo pipefail
missing=()
for tool in wrk valgrind strace; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "wrk, valgrind and strace are installed"
    exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
