#!/bin/sh
# A Debian bookworm + Python 3.11 base image built without any container registry:
# debootstrap --variant=minbase, then `docker import`. Stands in for python:3.11-slim-bookworm
# where no image can be pulled (an air-gapped site, our CI):
#     docker build --build-arg BASE="$(deploy/images/base.sh)" -t ami-release .
# Prints the image's tag. Cached by (suite, the mirror's Release date, this script's digest):
# a second run finds the image in the engine, or the root file system tarball in the cache
# folder ($AMI_RELEASE_IMAGE_CACHE, default ~/.cache/ami-release/images: shared by every checkout
# on the machine, as pip's cache is), and pays nothing or `docker import`.
# The host's own CAs (EXTRA_CA_DIR, default /usr/local/share/ca-certificates: a site's TLS
# proxy, as on our CI) are trusted in the image too, by the system bundle and by uv and
# Python (SSL_CERT_FILE) and pip (PIP_CERT), so pip, uv and apt reach what the host reaches.
# BASE_PYTHON=<prefix>: a CPython 3.11 built on bookworm (e.g. pyenv's) whose interpreter and
# standard library (not its site-packages) go to /usr/local, first on PATH, with pip from its
# ensurepip: the official image's layout. Debian's own python3 is 3.11.2, which lacks tarfile's
# extraction filters (PEP 706, Python >= 3.11.4) that the release bundle's unpacking uses:
# docs/containers.md.
# Needs root (debootstrap) and the docker client; DEBIAN_MIRROR, DEBIAN_SUITE override.
set -eu
suite=${DEBIAN_SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${AMI_RELEASE_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ami-release/images}
packages=python3,python3-pip,ca-certificates
extra_ca=${EXTRA_CA_DIR:-/usr/local/share/ca-certificates}
release_date=$(curl -fsS --max-time 30 "$mirror/dists/$suite/Release" | sed -n 's/^Date: //p')
test -n "$release_date" || { echo "ERROR: no Release date from $mirror/dists/$suite/Release: is the Debian mirror reachable? (set DEBIAN_MIRROR)" >&2; exit 1; }
snapshot=$(date -u -d "$release_date" +%Y%m%d)
pyver=${BASE_PYTHON:+$("$BASE_PYTHON/bin/python3" -c 'import sys; print(sys.version)')}
digest=$( (cat "$0"; echo "$pyver") | cat - $(find "$extra_ca" -name '*.crt' 2>/dev/null | sort) | sha256sum | cut -c1-12)
tag="ami-release-base:$suite-$snapshot-$digest"
if docker image inspect "$tag" >/dev/null 2>&1; then echo "$tag"; exit 0; fi
mkdir -p "$cache"
tarball="$cache/base-$suite-$snapshot-$digest.tar"
if [ ! -s "$tarball" ]; then
  root=$(mktemp -d "$cache/rootfs.XXXXXX")
  # debootstrap mounts /proc (and more) inside; never remove through a mount
  trap 'findmnt -rn -o TARGET | grep "^$root/" | sort -r | xargs -r umount -l; rm -rf --one-file-system "$root"' EXIT
  echo "debootstrap $suite ($snapshot) into $root" >&2
  debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >"$root.log" 2>&1 \
    || { echo "ERROR: debootstrap failed (log: $root.log)" >&2; exit 1; }
  rm -f "$root.log"
  if ls "$extra_ca"/*.crt >/dev/null 2>&1; then
    cp "$extra_ca"/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
  fi
  if [ -n "${BASE_PYTHON:-}" ]; then
    "$BASE_PYTHON/bin/python3" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
      || { echo "ERROR: BASE_PYTHON=$BASE_PYTHON is not a CPython 3.11" >&2; exit 1; }
    shared=""; test -e "$BASE_PYTHON/lib/libpython3.11.so.1.0" && shared=./lib/libpython3.11.so.1.0
    tar -C "$BASE_PYTHON" --exclude='./lib/python3.11/site-packages/*' --exclude='./lib/python3.11/test' \
      --exclude='__pycache__' -cf - ./bin/python3.11 ./lib/python3.11 $shared | tar -C "$root/usr/local" -xf -
    ln -sf python3.11 "$root/usr/local/bin/python3"
    ln -sf python3.11 "$root/usr/local/bin/python"
    chroot "$root" ldconfig
    chroot "$root" /usr/local/bin/python3 -m ensurepip --default-pip >/dev/null
  fi
  # like the official slim images: no apt lists, no caches in the layer
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  findmnt -rn -o TARGET | grep "^$root/" | sort -r | xargs -r umount -l
  tar -C "$root" --one-file-system -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
fi
# the official image's PATH and locale (an imported image has no ENV at all)
docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' --change 'CMD ["python3"]' "$tarball" "$tag" >/dev/null
echo "$tag"
