#!/bin/sh
# A local base image for edge/container/Dockerfile where no image registry is reachable: a Debian
# bookworm root file system from Debian's mirrors (mmdebstrap), with the packages the image needs
# at run time already in it, as a tarball for `podman import` / `docker import`.
#   edge/container/build-base.sh OUT.tar [ARCH]       # ARCH: amd64 (default: this machine's) or arm64
#   podman import OUT.tar localhost/humwatch-base:bookworm
#   podman build --format docker --build-arg BASE_IMAGE=localhost/humwatch-base:bookworm \
#     -f edge/container/Dockerfile -t humwatch .
# (The add-on folder takes it too: --build-arg BUILD_FROM=localhost/humwatch-base:bookworm.)
# Another architecture is built through qemu-user-static (binfmt). Needs root or unshare mode.
set -eu
out=${1:?usage: build-base.sh OUT.tar [ARCH]}
arch=${2:-$(dpkg --print-architecture)}
# apt stays (the Dockerfile fetches one .deb with it); documentation and translations do not.
exec mmdebstrap --quiet --variant=apt --arch="$arch" \
  --include=python3,python3-venv,libportaudio2,libpulse0,ca-certificates \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
  bookworm "$out" \
  "deb http://deb.debian.org/debian bookworm main" \
  "deb http://deb.debian.org/debian bookworm-updates main" \
  "deb http://deb.debian.org/debian-security bookworm-security main"
