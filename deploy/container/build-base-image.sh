#!/usr/bin/env bash
# Builds a local stand-in for the official python:3.11-slim-bookworm image, for machines
# that cannot pull from a container registry but can reach a Debian mirror (a corporate
# network, an air-gapped CI): debootstrap of Debian bookworm with Debian's python3,
# security updates applied, the host's extra CA certificates trusted (so that pip and uv
# inside `podman build` work behind a TLS-inspecting proxy), imported with `podman import`.
#
#   deploy/container/build-base-image.sh            # prints the image name on stdout
#   deploy/container/build-image.sh --local-base    # builds the app image on top of it
#
# The image is tagged with a hash of this script and of the CA certificates, and not built
# again while an image with that tag exists: rerunning costs a second, and changing the
# script or the certificates makes a new one. Needs root (debootstrap, chroot).
#
# Environment: DEBIAN_MIRROR (http://deb.debian.org/debian), DEBIAN_SECURITY_MIRROR
# (http://deb.debian.org/debian-security), EXTRA_CA_DIR (/usr/local/share/ca-certificates:
# *.crt files in it are added), BASE_IMAGE_REPO (localhost/user-service-base).
set -euo pipefail

SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
CA_DIR=${EXTRA_CA_DIR:-/usr/local/share/ca-certificates}
IMAGE_REPO=${BASE_IMAGE_REPO:-localhost/user-service-base}
# What the official slim image has (ca-certificates, netbase, tzdata) plus Debian's
# python3 (3.11 on bookworm) and python3-venv, whose ensurepip the Dockerfile's builder
# stage uses to install uv, and binutils, whose strip the rootfs stage runs on extension
# modules. This base is only ever a build stage: the runtime image starts from scratch.
PACKAGES=python3,python3-venv,ca-certificates,netbase,tzdata,binutils

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ -z "${CONTAINERS_CONF:-}" && -f "$here/containers.conf" ]]; then
  export CONTAINERS_CONF="$here/containers.conf"
fi

log() { echo "build-base-image: $*" >&2; }

[[ "$(id -u)" == 0 ]] || { log "must run as root (debootstrap and chroot)"; exit 1; }
command -v debootstrap >/dev/null || [[ -x /usr/sbin/debootstrap ]] || {
  log "debootstrap is missing (apt-get install debootstrap)"; exit 1; }
export PATH="$PATH:/usr/sbin:/sbin"

shopt -s nullglob
certificates=("$CA_DIR"/*.crt)
shopt -u nullglob

# The cache key: everything that changes the result except the mirror's content.
key=$(
  {
    cat "${BASH_SOURCE[0]}"
    echo "$PACKAGES $SUITE"
    for cert in "${certificates[@]}"; do sha256sum "$cert" | cut -d' ' -f1; done
  } | sha256sum | cut -c1-12
)
image="$IMAGE_REPO:$SUITE-$key"

if podman image exists "$image"; then
  log "$image exists (delete it to build again)"
  echo "$image"
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/var/tmp}/user-service-base.XXXXXX")
rootfs="$work/rootfs"
cleanup() {
  # A failed chroot step may leave /proc mounted inside the tree; never rm through it.
  if mountpoint -q "$rootfs/proc" 2>/dev/null; then umount -l "$rootfs/proc"; fi
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

started=$SECONDS
log "debootstrap $SUITE from $MIRROR into $rootfs"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
  tail -n 40 "$work/debootstrap.log" >&2
  exit 1
}

cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
SOURCES

for cert in "${certificates[@]}"; do
  install -m 0644 "$cert" "$rootfs/usr/local/share/ca-certificates/$(basename "$cert")"
done

in_root() { chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"; }

mount -t proc proc "$rootfs/proc"
log "applying $SUITE-updates and $SUITE-security"
in_root apt-get update -qq
in_root apt-get -y -qq -o Dpkg::Options::=--force-confold upgrade >"$work/upgrade.log" 2>&1 || {
  tail -n 40 "$work/upgrade.log" >&2
  exit 1
}
in_root update-ca-certificates >/dev/null
in_root python3 --version >&2
umount "$rootfs/proc"

# What a container image does not need: package indexes and caches, documentation (but
# each package's copyright file: the runtime image carries those of the packages it takes
# files from), translations, logs, and the build host's resolver configuration (the
# container engine provides its own).
find "$rootfs"/usr/share/doc -type f ! -name copyright -delete
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
  "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
  "$rootfs"/usr/share/locale/* "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/var/tmp/* \
  "$rootfs"/etc/resolv.conf "$rootfs"/etc/hostname

log "importing as $image"
# Device nodes, /proc and /sys are the runtime's business: keep the folders, not the content.
tar --numeric-owner --xattrs -C "$rootfs" --exclude=./dev/* --exclude=./proc/* --exclude=./sys/* -c . |
  podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --change "LABEL org.opencontainers.image.description=\"Debian $SUITE with python3, local stand-in for python:3.11-slim-$SUITE\"" \
    --change "LABEL io.github.user-service.base-key=$key" \
    --message "deploy/container/build-base-image.sh ($key)" \
    - "$image" >/dev/null
podman tag "$image" "$IMAGE_REPO:$SUITE"
log "built $image in $((SECONDS - started)) s, $(podman image inspect --format '{{.Size}}' "$image") bytes"
echo "$image"
