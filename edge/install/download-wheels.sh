#!/bin/sh
# On the workstation: download the edge's exact wheels (edge/install/requirements.txt, hashed) for a
# board, so it installs them with no internet:  download-wheels.sh DIR [ARCH [PYTHON]]
# ARCH: aarch64 (a 64-bit Pi, the default) or x86_64; PYTHON: the board's version (default 3.11).
# PIP: the pip to run (default: python3 -m pip). Binary wheels only: a board never compiles.
set -eu
[ $# -ge 1 ] || { echo "usage: $0 DIR [ARCH [PYTHON]]" >&2; exit 2; }
dir=$1 arch=${2:-aarch64} python=${3:-3.11}
# Every manylinux level up to glibc 2.28 (Raspberry Pi OS bullseye has 2.31): older pips do not
# widen a --platform to the levels below it.
platforms=""
for level in 28 27 26 25 24 23 22 21 20 19 18 17; do platforms="$platforms --platform manylinux_2_${level}_$arch"; done
${PIP:-python3 -m pip} download --require-hashes -r "$(dirname "$0")/requirements.txt" --dest "$dir" \
  --only-binary=:all: --implementation cp --python-version "$python" $platforms --platform "manylinux2014_$arch"
