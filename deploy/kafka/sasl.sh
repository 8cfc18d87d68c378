# shellcheck shell=bash
# SASL_SSL mode of start.sh (KAFKA_SECURITY=sasl_ssl). Sourced after lib.sh, never executed.
#
# Credentials live in $KAFKA_CREDENTIALS_FILE (mode 600), created once per run
# dir from KAFKA_SASL_ADMIN_PASSWORD / KAFKA_SASL_USER / KAFKA_SASL_PASSWORD or
# random passwords; the storage format adds them as SCRAM users, so they must not
# change while the data dir exists (stop.sh --wipe keeps the file, so a fresh
# cluster gets the same users). Clients read $KAFKA_CLIENT_ENV_FILE
# (TEXTPULSE_KAFKA_* lines) or $KAFKA_CLIENT_PROPERTIES (Kafka's Java tools).

KAFKA_SASL_MECHANISM="SCRAM-SHA-512"

# Write the credentials file if absent, then load it.
sasl_credentials() {
  if [[ ! -s "$KAFKA_CREDENTIALS_FILE" && -f "$KAFKA_DATA_DIR/meta.properties" ]]; then
    die "$KAFKA_DATA_DIR was formatted with SCRAM users whose credentials file $KAFKA_CREDENTIALS_FILE is gone: stop.sh --wipe (with KAFKA_SECURITY=sasl_ssl) for a fresh cluster"
  fi
  if [[ ! -s "$KAFKA_CREDENTIALS_FILE" ]]; then
    local admin_pw="${KAFKA_SASL_ADMIN_PASSWORD:-$(openssl rand -hex 24)}"
    local user="${KAFKA_SASL_USER:-textpulse}" user_pw="${KAFKA_SASL_PASSWORD:-$(openssl rand -hex 24)}"
    # The --add-scram syntax ('[name=…,password=…]') cannot carry these characters.
    local v
    for v in "$user" "$admin_pw" "$user_pw"; do
      [[ "$v" =~ ^[A-Za-z0-9._~+-]+$ ]] || die "SASL user names and passwords may only use letters, digits and . _ ~ + -"
    done
    (
      umask 077
      printf 'KAFKA_SASL_ADMIN_USER=admin\nKAFKA_SASL_ADMIN_PASSWORD=%s\nKAFKA_SASL_USER=%s\nKAFKA_SASL_PASSWORD=%s\n' \
        "$admin_pw" "$user" "$user_pw" >"$KAFKA_CREDENTIALS_FILE"
    )
    log "created SCRAM credentials in $KAFKA_CREDENTIALS_FILE (users admin, $user)"
  fi
  # shellcheck disable=SC1090  # generated file
  source "$KAFKA_CREDENTIALS_FILE"
}

# Client settings for services/tests (env file) and Kafka's tools (properties).
sasl_client_files() {
  (
    umask 077
    cat >"$KAFKA_CLIENT_ENV_FILE" <<ENV
TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$KAFKA_PORT
TEXTPULSE_KAFKA_SECURITY_PROTOCOL=SASL_SSL
TEXTPULSE_KAFKA_SASL_MECHANISM=$KAFKA_SASL_MECHANISM
TEXTPULSE_KAFKA_SASL_USERNAME=$KAFKA_SASL_USER
TEXTPULSE_KAFKA_SASL_PASSWORD=$KAFKA_SASL_PASSWORD
TEXTPULSE_KAFKA_SSL_CAFILE=$KAFKA_TLS_DIR/ca.pem
ENV
    cat >"$KAFKA_CLIENT_PROPERTIES" <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=$KAFKA_SASL_MECHANISM
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$KAFKA_SASL_ADMIN_USER" password="$KAFKA_SASL_ADMIN_PASSWORD";
ssl.truststore.type=PEM
ssl.truststore.location=$KAFKA_TLS_DIR/ca.pem
PROPS
  )
}

# Everything the SASL_SSL broker needs before it is formatted and started:
# certificates, credentials, client files, and the listener/SASL/TLS part of
# $KAFKA_CONFIG_FILE (rendered from server.properties by start.sh).
sasl_prepare() {
  "$KAFKA_DEPLOY_DIR/certs.sh"
  sasl_credentials
  sasl_client_files
  local keystore_pw rendered
  keystore_pw="$(tr -d '[:space:]' <"$KAFKA_TLS_DIR/keystore.password")"
  rendered="$(grep -vE '^(listeners|advertised\.listeners|listener\.security\.protocol\.map|inter\.broker\.listener\.name)=' "$KAFKA_CONFIG_FILE")"
  (
    umask 077
    {
      printf '%s\n\n' "$rendered"
      sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
        -e "s|@KAFKA_CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
        -e "s|@KAFKA_TLS_DIR@|$KAFKA_TLS_DIR|g" \
        -e "s|@ADMIN_USER@|$KAFKA_SASL_ADMIN_USER|g" \
        -e "s|@ADMIN_PASSWORD@|$KAFKA_SASL_ADMIN_PASSWORD|g" \
        -e "s|@KEYSTORE_PASSWORD@|$keystore_pw|g" \
        "$KAFKA_DEPLOY_DIR/sasl-ssl.properties"
    } >"$KAFKA_CONFIG_FILE.new"
  )
  mv -f "$KAFKA_CONFIG_FILE.new" "$KAFKA_CONFIG_FILE"
}

# StorageTool arguments creating the SCRAM users at format time (KIP-900).
sasl_format_args() {
  printf '%s\n' --add-scram "$KAFKA_SASL_MECHANISM=[name=$KAFKA_SASL_ADMIN_USER,password=$KAFKA_SASL_ADMIN_PASSWORD]" \
    --add-scram "$KAFKA_SASL_MECHANISM=[name=$KAFKA_SASL_USER,password=$KAFKA_SASL_PASSWORD]"
}
