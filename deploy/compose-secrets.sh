#!/usr/bin/env bash
# The secrets docker-compose.yml reads, made once into a git-ignored folder:
#
#   ./deploy/compose-secrets.sh            # into .data/compose/ (.data/ is git-ignored)
#   ./deploy/compose-secrets.sh DIR        # anywhere else (the tests use a temporary folder)
#   ./deploy/compose-secrets.sh --force    # replace existing ones
#
#   tls.crt, tls.key   a self-signed certificate for nginx (localhost, 127.0.0.1, ::1 and
#                      the compose service name nginx), ECDSA P-256, valid 365 days
#   jwt-signing.pem    the Ed25519 key that signs the service's access tokens
#   mfa.key            the key that encrypts the TOTP secrets (32 random bytes, base64)
#
# Existing files are kept unless --force is given: a new signing key logs every user out.
# mfa.key is kept even then: a new one would leave every second factor undecryptable.
# Only openssl is needed (1.1.1 or later, for Ed25519 and -addext).
set -euo pipefail

force=false
dir=""
for arg in "$@"; do
  case "$arg" in
    --force) force=true ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    -*) echo "compose-secrets.sh: unknown option $arg" >&2; exit 2 ;;
    *) dir="$arg" ;;
  esac
done
if [[ -z "$dir" ]]; then
  dir="$(cd "$(dirname "$0")/.." && pwd)/.data/compose"
fi

umask 077
mkdir -p "$dir"
# Other local users cannot enter the folder; the files inside it are readable by any UID
# (below), which the containers need.
chmod 700 "$dir"

if [[ "$force" == true || ! -s "$dir/tls.crt" || ! -s "$dir/tls.key" ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 \
    -days 365 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,DNS:nginx,IP:127.0.0.1,IP:::1" \
    -addext "keyUsage=critical,digitalSignature" \
    -addext "extendedKeyUsage=serverAuth" \
    -keyout "$dir/tls.key" -out "$dir/tls.crt" 2>/dev/null
  echo "compose-secrets.sh: wrote $dir/tls.crt and $dir/tls.key (self-signed, 365 days)"
else
  echo "compose-secrets.sh: kept $dir/tls.crt and $dir/tls.key"
fi

if [[ "$force" == true || ! -s "$dir/jwt-signing.pem" ]]; then
  openssl genpkey -algorithm ed25519 -out "$dir/jwt-signing.pem"
  echo "compose-secrets.sh: wrote $dir/jwt-signing.pem (Ed25519)"
else
  echo "compose-secrets.sh: kept $dir/jwt-signing.pem"
fi

if [[ ! -s "$dir/mfa.key" ]]; then
  openssl rand -base64 32 >"$dir/mfa.key"
  echo "compose-secrets.sh: wrote $dir/mfa.key (TOTP secrets' key)"
else
  echo "compose-secrets.sh: kept $dir/mfa.key (never replaced: enrolments depend on it)"
fi

# Compose (without Swarm) bind-mounts secret files as they are, owner and mode included,
# and the containers read them as users of their own (the service as UID 10001, nginx's
# master as a root without CAP_DAC_OVERRIDE). So the files are readable by any UID, and the
# 0700 folder around them is what keeps other local users out.
chmod 644 "$dir/tls.crt" "$dir/tls.key" "$dir/jwt-signing.pem" "$dir/mfa.key"
