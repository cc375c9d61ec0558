#!/usr/bin/env bash
# make_certs.sh DIR [NAME...] — certificates for vexstate's host-to-host mutual TLS (the
# migration data stream and the peer RPCs; migration/tls.h).
#
# Writes into DIR (created if missing):
#   ca.pem, ca.key          a CA (EC P-256, 10 years). Kept if present: hand the same ca.pem
#                           to every host, and keep ca.key off them for real use.
#   server.pem, server.key  the server certificate (serverAuth and clientAuth, 825 days)
#   client.pem, client.key  the client certificate (clientAuth, 825 days)
# Both leaf certificates carry the SANs IP:127.0.0.1, IP:::1, DNS:localhost plus every NAME
# given (an IPv4/IPv6 literal becomes an IP SAN, anything else a DNS SAN).
#
# Idempotent: a leaf is kept when it is signed by ca.pem, valid for 30 more days and was made
# for the same NAMEs (recorded in DIR/names); otherwise it is made again. Private keys are
# mode 0600. Files are written to temporaries and renamed, so a reader never sees half a file.
# Needs the openssl command-line tool (1.1.1 or later).
set -euo pipefail

if [ $# -lt 1 ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
dir=$1
shift
mkdir -p "$dir"
umask 077

names="127.0.0.1 ::1 localhost $*"
sans=""
for n in $names; do
  if [[ "$n" =~ ^[0-9.]+$ || "$n" == *:* ]]; then sans+="IP:$n,"; else sans+="DNS:$n,"; fi
done
sans=${sans%,}

tmp=$(mktemp -d "$dir/.make_certs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

new_key() {  # new_key OUT
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

if [ ! -s "$dir/ca.pem" ] || [ ! -s "$dir/ca.key" ]; then
  new_key "$tmp/ca.key"
  openssl req -new -x509 -key "$tmp/ca.key" -out "$tmp/ca.pem" -days 3650 -sha256 \
    -subj "/O=vexstate/CN=vexstate migration CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash"
  mv "$tmp/ca.key" "$dir/ca.key"
  chmod 644 "$tmp/ca.pem"
  mv "$tmp/ca.pem" "$dir/ca.pem"
  echo "made $dir/ca.pem"
fi

leaf_ok() {  # leaf_ok ROLE: signed by the CA, 30 more days, same names
  [ -s "$dir/$1.pem" ] && [ -s "$dir/$1.key" ] &&
    [ "$(cat "$dir/names" 2>/dev/null)" = "$sans" ] &&
    openssl verify -CAfile "$dir/ca.pem" "$dir/$1.pem" >/dev/null 2>&1 &&
    openssl x509 -in "$dir/$1.pem" -noout -checkend 2592000 >/dev/null 2>&1
}

make_leaf() {  # make_leaf ROLE EXTENDED_KEY_USAGE
  local role=$1 eku=$2
  new_key "$tmp/$role.key"
  openssl req -new -key "$tmp/$role.key" -out "$tmp/$role.csr" -subj "/O=vexstate/CN=vexstate $role" 2>/dev/null
  cat >"$tmp/$role.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=$eku
subjectAltName=$sans
authorityKeyIdentifier=keyid
subjectKeyIdentifier=hash
EXT
  openssl x509 -req -in "$tmp/$role.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 825 -sha256 -extfile "$tmp/$role.ext" \
    -out "$tmp/$role.pem" 2>/dev/null
  chmod 644 "$tmp/$role.pem"
  mv "$tmp/$role.key" "$dir/$role.key"
  mv "$tmp/$role.pem" "$dir/$role.pem"
  echo "made $dir/$role.pem ($sans)"
}

remade=0
if ! leaf_ok server; then make_leaf server serverAuth,clientAuth; remade=1; fi
if ! leaf_ok client; then make_leaf client clientAuth; remade=1; fi
if [ "$remade" = 1 ]; then
  printf '%s' "$sans" >"$tmp/names"
  chmod 644 "$tmp/names"
  mv "$tmp/names" "$dir/names"
else
  echo "kept $dir (ca.pem, server.pem, client.pem for $sans)"
fi
