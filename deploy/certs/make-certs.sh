#!/usr/bin/env bash
# Makes the test PKI for the TLS RabbitMQ node with openssl. Idempotent: a file that
# exists and still verifies against its CA is kept; anything missing is made.
#
#   bash deploy/certs/make-certs.sh DIR [CLIENT_NAME ...]
#
# DIR/ca.pem, ca.key               the trusted CA (signs everything below)
# DIR/server.pem, server.key       the broker: CN=localhost, SAN DNS:localhost, IP:127.0.0.1
# DIR/wrong-name.pem, .key         a server cert from the trusted CA for wrong.invalid only
# DIR/client-<name>.pem, .key      one per CLIENT_NAME; CN = RabbitMQ user = worker id
# DIR/evil-ca.pem, evil-ca.key     a CA the broker does not trust
# DIR/evil-client.pem, .key        a client cert for CN=w1 signed by the evil CA
#
# Keys are EC P-256 (small, fast handshakes). Certificates last ten years: this PKI is
# for tests and local clusters, never for production.
set -euo pipefail

dir="${1:?usage: make-certs.sh DIR [CLIENT_NAME ...]}"
shift
days=3650
mkdir -p "$dir"
umask 077

new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# A self-signed CA: $1 = file stem, $2 = subject CN.
make_ca() {
  local stem=$1 cn=$2
  if [[ -s "$dir/$stem.pem" && -s "$dir/$stem.key" ]]; then return 0; fi
  new_key "$dir/$stem.key"
  openssl req -x509 -new -key "$dir/$stem.key" -sha256 -days "$days" -subj "/O=scaleout/CN=$cn" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$dir/$stem.pem"
}

# A leaf signed by CA $1: $2 = file stem, $3 = CN, $4 = extendedKeyUsage, $5 = SAN or "".
make_leaf() {
  local ca=$1 stem=$2 cn=$3 eku=$4 san=$5
  if [[ -s "$dir/$stem.pem" && -s "$dir/$stem.key" ]] &&
    openssl verify -CAfile "$dir/$ca.pem" "$dir/$stem.pem" >/dev/null 2>&1; then
    return 0
  fi
  local ext
  ext=$(mktemp)
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [[ -z "$san" ]] || echo "subjectAltName=$san"
  } >"$ext"
  new_key "$dir/$stem.key"
  openssl req -new -key "$dir/$stem.key" -subj "/O=scaleout/CN=$cn" -out "$dir/$stem.csr"
  openssl x509 -req -in "$dir/$stem.csr" -CA "$dir/$ca.pem" -CAkey "$dir/$ca.key" \
    -CAcreateserial -days "$days" -sha256 -extfile "$ext" -out "$dir/$stem.pem" 2>/dev/null
  rm -f "$dir/$stem.csr" "$ext"
}

make_ca ca "scaleout test CA"
make_leaf ca server localhost serverAuth "DNS:localhost,IP:127.0.0.1"
make_leaf ca wrong-name wrong.invalid serverAuth "DNS:wrong.invalid"
for name in "$@"; do
  [[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$ ]] || {
    echo "make-certs: '$name' is not a valid worker id / user name" >&2
    exit 2
  }
  make_leaf ca "client-$name" "$name" clientAuth ""
done
make_ca evil-ca "evil CA"
make_leaf evil-ca evil-client w1 clientAuth ""
chmod 0644 "$dir"/*.pem
echo "make-certs: certificates in $dir"
