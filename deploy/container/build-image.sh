#!/usr/bin/env bash
# Builds the service's image from the repository's Dockerfile with the build identity
# filled in (OCI labels and the build_info metric: version from pyproject.toml, revision
# from git, source from the git remote).
#
#   deploy/container/build-image.sh                        # FROM the official python image
#   deploy/container/build-image.sh --local-base           # FROM a debootstrap-built base (no registry)
#   deploy/container/build-image.sh --tag registry.example.com/user-service:1.2.3 [-- extra build args]
#   deploy/container/build-image.sh --file /tmp/Dockerfile.experiment   # another Dockerfile, same context
#
# --local-base runs build-base-image.sh (cached) and passes its image as PYTHON_IMAGE: for
# machines that reach a Debian mirror and PyPI, possibly through a TLS-inspecting proxy,
# but no container registry. CONTAINER_ENGINE=docker uses docker instead of podman. The
# image name is printed on stdout.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
engine=${CONTAINER_ENGINE:-podman}
tag=localhost/user-service:dev
dockerfile="$root/Dockerfile"
local_base=false
extra=()

while (($#)); do
  case "$1" in
    --local-base) local_base=true ;;
    --tag) tag=$2; shift ;;
    --file) dockerfile=$2; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,14p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "build-image: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [[ "$engine" == podman && -z "${CONTAINERS_CONF:-}" && -f "$here/containers.conf" ]]; then
  export CONTAINERS_CONF="$here/containers.conf"
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/pyproject.toml" | head -n 1)
revision=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
if [[ "$revision" != unknown && -n "$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
  revision="$revision-dirty"  # the image holds changes that no commit has
fi
source_url=${IMAGE_SOURCE_URL:-$(git -C "$root" remote get-url origin 2>/dev/null || true)}

args=(--tag "$tag" --build-arg "VERSION=$version" --build-arg "REVISION=$revision" --build-arg "SOURCE=$source_url")
if [[ "$engine" == podman ]]; then
  # HEALTHCHECK exists only in the docker image format, not in podman's default (OCI).
  args+=(--format docker)
fi
if $local_base; then
  base=$("$here/build-base-image.sh")
  args+=(--build-arg "PYTHON_IMAGE=$base")
fi

started=$SECONDS
"$engine" build "${args[@]}" "${extra[@]}" --file "$dockerfile" "$root" >&2
echo "build-image: $tag built in $((SECONDS - started)) s, $("$engine" image inspect --format '{{.Size}}' "$tag") bytes" >&2
echo "$tag"
