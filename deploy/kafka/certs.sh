#!/usr/bin/env bash
# Create a throw-away test CA and a broker certificate for the SASL_SSL
# listener, under $KAFKA_TLS_DIR (default $KAFKA_RUN_DIR/tls; never committed).
#   certs.sh           create what is missing (idempotent; keeps a valid set)
#   certs.sh --force   create a new CA and broker certificate
# Files: ca.pem (clients trust this: TEXTPULSE_KAFKA_SSL_CAFILE), ca.key,
# broker.pem/broker.key (SAN IP:127.0.0.1, DNS:localhost), broker.p12 (the
# broker's PKCS12 keystore), keystore.password. Keys are mode 600.
# Settings (env): KAFKA_SECURITY=sasl_ssl picks the SASL run dir;
# KAFKA_TLS_DIR, KAFKA_TLS_DAYS (validity, default 365).
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
    *) die "unknown option: $arg (use --force)" ;;
  esac
done

command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"
days="${KAFKA_TLS_DAYS:-365}"
dir="$KAFKA_TLS_DIR"

# A set is reused only if it is complete, the broker certificate chains to the
# CA and stays valid for at least a day more.
if ((!force)) && [[ -s "$dir/ca.pem" && -s "$dir/broker.p12" && -s "$dir/keystore.password" ]] \
  && openssl verify -CAfile "$dir/ca.pem" "$dir/broker.pem" >/dev/null 2>&1 \
  && openssl x509 -checkend 86400 -noout -in "$dir/broker.pem" >/dev/null 2>&1; then
  log "TLS material in $dir is present and valid"
  exit 0
fi

mkdir -p "$dir"
chmod 700 "$dir"
umask 077
work="$(mktemp -d "$dir/.new.XXXXXX")"
trap 'rm -rf "$work"' EXIT

openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 -days "$days" \
  -keyout "$work/ca.key" -out "$work/ca.pem" -subj "/CN=textpulse local test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

openssl req -new -newkey rsa:2048 -nodes -sha256 \
  -keyout "$work/broker.key" -out "$work/broker.csr" -subj "/CN=localhost" 2>/dev/null
cat >"$work/broker.ext" <<'EOF'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
EOF
openssl x509 -req -sha256 -days "$days" -in "$work/broker.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
  -CAcreateserial -extfile "$work/broker.ext" -out "$work/broker.pem" 2>/dev/null

# PKCS12 keystore for the broker: key + certificate + CA chain, random password.
openssl rand -hex 24 >"$work/keystore.password"
openssl pkcs12 -export -name broker -in "$work/broker.pem" -inkey "$work/broker.key" -certfile "$work/ca.pem" \
  -out "$work/broker.p12" -passout "file:$work/keystore.password"

openssl verify -CAfile "$work/ca.pem" "$work/broker.pem" >/dev/null || die "generated certificate does not verify"
for f in ca.pem ca.key broker.pem broker.key broker.p12 keystore.password; do
  mv -f "$work/$f" "$dir/$f"
done
chmod 644 "$dir/ca.pem" "$dir/broker.pem"
log "created test CA and broker certificate (SAN IP:127.0.0.1, DNS:localhost, $days days) in $dir"
