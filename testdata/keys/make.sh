#!/usr/bin/env bash
# Regenerates the test-only key fixtures in this directory. Needs openssl and python3.
# These keys are public on purpose: never use them for anything but tests.
set -euo pipefail

cd "$(dirname "$0")"
umask 022

# Private keys: PKCS#8 PEM ("BEGIN PRIVATE KEY"); public keys: SPKI PEM ("BEGIN PUBLIC KEY").
pair() { # name, genpkey options...
    local name=$1
    shift
    openssl genpkey "$@" -out "$name.key" 2>/dev/null
    openssl pkey -in "$name.key" -pubout -out "$name.pub.pem"
}

pair rsa -algorithm RSA -pkeyopt rsa_keygen_bits:2048
pair rsa2 -algorithm RSA -pkeyopt rsa_keygen_bits:2048
pair ec256 -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -pkeyopt ec_param_enc:named_curve
pair ec384 -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -pkeyopt ec_param_enc:named_curve
pair ed25519 -algorithm ed25519

# A 48-byte printable HMAC secret (base64url alphabet), without a trailing newline.
openssl rand -base64 48 | tr -d '\n' | tr '+/' '-_' | head -c 48 >hmac.secret

# The public keys as JWKs. The SPKI DER of an EC or Ed25519 key ends with the raw public
# point; the RSA modulus is read with `openssl rsa -modulus`.
modulus() { openssl rsa -pubin -in "$1" -noout -modulus | cut -d= -f2; }
point() { openssl pkey -pubin -in "$1" -outform DER | tail -c "$2" | xxd -p | tr -d '\n'; }

python3 - "$(modulus rsa.pub.pem)" "$(point ec256.pub.pem 65)" "$(point ed25519.pub.pem 32)" \
    "$(modulus rsa2.pub.pem)" <<'PY'
import base64, json, sys

def b64u(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

rsa_n, ec_point, ed_x, rsa2_n = (bytes.fromhex(h) for h in sys.argv[1:5])
assert ec_point[0] == 4 and len(ec_point) == 65, "expected an uncompressed P-256 point"
assert len(ed_x) == 32

def rsa_jwk(kid: str, n: bytes) -> dict:
    return {"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
            "n": b64u(n.lstrip(b"\0")), "e": b64u((65537).to_bytes(3, "big"))}

jwks = {"keys": [
    rsa_jwk("rsa-1", rsa_n),
    {"kty": "EC", "kid": "ec-1", "alg": "ES256", "use": "sig", "crv": "P-256",
     "x": b64u(ec_point[1:33]), "y": b64u(ec_point[33:])},
    {"kty": "OKP", "kid": "ed-1", "alg": "EdDSA", "use": "sig", "crv": "Ed25519",
     "x": b64u(ed_x)},
]}
rotated = {"keys": [rsa_jwk("rsa-2", rsa2_n)]}
for name, doc in (("jwks.json", jwks), ("jwks-rotated.json", rotated)):
    with open(name, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
PY

# Exponent check: the JWKs above hard-code e = 65537.
for pub in rsa.pub.pem rsa2.pub.pem; do
    openssl rsa -pubin -in "$pub" -noout -text | grep -q 'Exponent: 65537' ||
        { echo "unexpected RSA exponent in $pub" >&2; exit 1; }
done
echo "keys written to $(pwd)"
