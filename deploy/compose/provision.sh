#!/usr/bin/env bash
# The `provision` job of deploy/docker-compose.yml, run as root in the scaleout image on
# every `up` (idempotent: what exists and still verifies is kept). It writes each volume
# with only what its readers need:
#
#   /pki/ca        the CA's key and every certificate (this job only)
#   /pki/rabbitmq  ca.pem, the broker's certificate for DNS:rabbitmq, definitions.json
#   /pki/master    ca.pem, client-scaleout-master.pem/.key
#   /pki/workers   ca.pem, client-w1..wN.pem/.key (N = SCALEOUT_WORKER_POOL)
#   /var/lib/scaleout/identities   the pool's claims (see worker-identity.sh)
#
# RabbitMQ's definitions: users scaleout-master and w1..wN (certificate login only, the
# permissions of dispatcher.broker.provisioning), the admin (password RABBITMQ_ADMIN_PASSWORD,
# management UI only), and the topology with every worker's queues.
#
# SCALEOUT_PROVISION_ROOT prefixes every path (tests run the job in a temporary folder).
set -euo pipefail

root=${SCALEOUT_PROVISION_ROOT:-}
pool=${SCALEOUT_WORKER_POOL:-8}
admin=${RABBITMQ_ADMIN_USER:-scaleout-admin}
: "${RABBITMQ_ADMIN_PASSWORD:?set RABBITMQ_ADMIN_PASSWORD in deploy/.env}"
app_uid=10001    # the scaleout image's user
rabbit_uid=999   # the rabbitmq image's user
ca=$root/pki/ca
claims=$root/var/lib/scaleout/identities

[[ $pool =~ ^[1-9][0-9]*$ ]] || { echo "provision: SCALEOUT_WORKER_POOL must be a positive number" >&2; exit 2; }
ids=()
for i in $(seq 1 "$pool"); do ids+=("w$i"); done

bash "$(dirname "$0")/../certs/make-certs.sh" "$ca" scaleout-master "${ids[@]}" >/dev/null

# The brokers' one certificate names the three compose services (the cluster's nodes),
# which clients verify.
if ! openssl verify -CAfile "$ca/ca.pem" "$ca/broker.pem" >/dev/null 2>&1 ||
  ! openssl x509 -in "$ca/broker.pem" -noout -ext subjectAltName | grep -q 'DNS:rabbitmq3'; then
  (
    umask 077
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$ca/broker.key" 2>/dev/null
    openssl req -new -key "$ca/broker.key" -subj "/O=scaleout/CN=rabbitmq" -out "$ca/broker.csr"
    printf '%s\n' "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
      "subjectAltName=DNS:rabbitmq,DNS:rabbitmq2,DNS:rabbitmq3,DNS:localhost,IP:127.0.0.1" >"$ca/broker.ext"
    openssl x509 -req -in "$ca/broker.csr" -CA "$ca/ca.pem" -CAkey "$ca/ca.key" \
      -CAcreateserial -days 3650 -sha256 -extfile "$ca/broker.ext" -out "$ca/broker.pem" 2>/dev/null
    rm -f "$ca/broker.csr" "$ca/broker.ext"
  )
fi

# install SRC DEST OWNER MODE
put() { install -D -o "$3" -g "$3" -m "$4" "$1" "$2"; }

put "$ca/ca.pem" "$root/pki/rabbitmq/ca.pem" "$rabbit_uid" 0444
put "$ca/broker.pem" "$root/pki/rabbitmq/server.pem" "$rabbit_uid" 0444
put "$ca/broker.key" "$root/pki/rabbitmq/server.key" "$rabbit_uid" 0400

put "$ca/ca.pem" "$root/pki/master/ca.pem" "$app_uid" 0444
put "$ca/client-scaleout-master.pem" "$root/pki/master/client.pem" "$app_uid" 0444
put "$ca/client-scaleout-master.key" "$root/pki/master/client.key" "$app_uid" 0400

put "$ca/ca.pem" "$root/pki/workers/ca.pem" "$app_uid" 0444
for id in "${ids[@]}"; do
  put "$ca/client-$id.pem" "$root/pki/workers/client-$id.pem" "$app_uid" 0444
  put "$ca/client-$id.key" "$root/pki/workers/client-$id.key" "$app_uid" 0400
done

# RabbitMQ's rabbit_password_hashing_sha256: base64(salt(4) || sha256(salt(4) || password)).
RABBITMQ_ADMIN_USER=$admin "${PYTHON:-python}" - "$root/pki/rabbitmq/definitions.json" "${ids[@]}" <<'PY'
import base64, hashlib, json, os, sys

from dispatcher.broker.provisioning import worker_definitions

path, *ids = sys.argv[1:]
doc = worker_definitions(ids)
admin = os.environ["RABBITMQ_ADMIN_USER"]
salt = os.urandom(4)
digest = hashlib.sha256(salt + os.environ["RABBITMQ_ADMIN_PASSWORD"].encode()).digest()
doc["users"].append({
    "name": admin,
    "password_hash": base64.b64encode(salt + digest).decode(),
    "hashing_algorithm": "rabbit_password_hashing_sha256",
    "tags": ["administrator"],
})
doc["permissions"].append(
    {"user": admin, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
)
with open(path, "w") as out:
    json.dump(doc, out, indent=1)
PY
chown "$rabbit_uid:$rabbit_uid" "$root/pki/rabbitmq/definitions.json"
chmod 0400 "$root/pki/rabbitmq/definitions.json"

install -d -o "$app_uid" -g "$app_uid" -m 0755 "$claims"
echo "provision: CA, broker certificate, scaleout-master and ${ids[*]} ready"
