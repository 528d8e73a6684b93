#!/usr/bin/env python3
"""Print the JSON Web Tokens used by the bypass corpus, one `name token` pair a line.

Needs python3 (standard library only) and openssl. RS256 signatures (PKCS#1 v1.5) are
deterministic, so with the same keys in ../keys the same tokens come out; the ES256 one
is not, and any fresh signature of it is as good. Paste a token into the case files in
place of the old one when the keys change (see README.md).
"""

import base64
import hashlib
import hmac
import json
import subprocess
import sys
from pathlib import Path

KEYS = Path(__file__).resolve().parent.parent / "keys"
FAR = 4102444800  # 2100-01-01T00:00:00Z
PAST = 946684800  # 2000-01-01T00:00:00Z


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def part(value) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def openssl_sign(key: str, message: bytes) -> bytes:
    return subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", str(KEYS / key)],
        input=message,
        capture_output=True,
        check=True,
    ).stdout


def der_to_raw(der: bytes, size: int) -> bytes:
    """An ECDSA DER signature (SEQUENCE of two INTEGERs) as JWS r || s."""
    out = b""
    i = 2  # SEQUENCE tag and (short) length
    for _ in range(2):
        length = der[i + 1]
        value = der[i + 2 : i + 2 + length].lstrip(b"\0")
        out += value.rjust(size, b"\0")
        i += 2 + length
    return out


def token(header, claims, sign="rsa.key", alg=None) -> str:
    message = f"{part(header)}.{part(claims)}".encode()
    alg = alg or header.get("alg")
    if sign is None:
        signature = b""
    elif alg == "HS256":
        signature = hmac.new((KEYS / sign).read_bytes(), message, hashlib.sha256).digest()
    elif alg == "ES256":
        signature = der_to_raw(openssl_sign(sign, message), 32)
    else:
        signature = openssl_sign(sign, message)
    return f"{message.decode()}.{b64(signature)}"


def claims(**changes):
    base = {"sub": "mallory", "iss": "https://issuer.test", "aud": "api", "exp": FAR}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


RS = {"alg": "RS256", "typ": "JWT", "kid": "rsa-1"}

TOKENS = {
    "admin": token(RS, claims(sub="ada", roles=["admin"])),
    "viewer": token(RS, claims(sub="vic", roles=["viewer"])),
    "none-lower": token({"alg": "none", "typ": "JWT"}, claims(roles=["admin"]), None),
    "none-title": token({"alg": "None", "typ": "JWT"}, claims(roles=["admin"]), None),
    "none-upper": token({"alg": "NONE", "typ": "JWT"}, claims(roles=["admin"]), None),
    "none-mixed": token({"alg": "nOnE", "typ": "JWT"}, claims(roles=["admin"]), None),
    "none-kid": token({"alg": "none", "kid": "rsa-1"}, claims(roles=["admin"]), None),
    "hs256-public-key": token(
        {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, claims(roles=["admin"]), "rsa.pub.pem"
    ),
    "es256-unpinned": token({"alg": "ES256", "kid": "ec-1"}, claims(roles=["admin"]), "ec256.key"),
    "alg-lowercase": token({"alg": "rs256", "kid": "rsa-1"}, claims(roles=["admin"]), alg="RS256"),
    "alg-missing": token({"kid": "rsa-1"}, claims(roles=["admin"]), alg="RS256"),
    "jwk": token(
        dict(RS, jwk={"kty": "RSA", "e": "AQAB", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw"}),
        claims(roles=["admin"]),
    ),
    "jku": token(dict(RS, jku="http://127.0.0.1:1/jwks.json"), claims(roles=["admin"])),
    "x5u": token(dict(RS, x5u="http://127.0.0.1:1/cert.pem"), claims(roles=["admin"])),
    "x5c": token(dict(RS, x5c=["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]), claims(roles=["admin"])),
    "crit": token(dict(RS, crit=["exp"]), claims(roles=["admin"])),
    "kid-traversal": token(dict(RS, kid="../../../../dev/null"), claims(roles=["admin"])),
    "kid-sql": token(dict(RS, kid="x' UNION SELECT 'secret' --"), claims(roles=["admin"])),
    "kid-command": token(dict(RS, kid="rsa-1|/usr/bin/id"), claims(roles=["admin"])),
    "kid-not-string": token(dict(RS, kid=1), claims(roles=["admin"])),
    "no-exp": token(RS, claims(roles=["admin"], exp=None)),
    "expired": token(RS, claims(roles=["admin"], exp=PAST)),
    "not-yet-valid": token(RS, claims(roles=["admin"], nbf=FAR - 1)),
    "wrong-iss": token(RS, claims(roles=["admin"], iss="https://evil.test")),
    "no-iss": token(RS, claims(roles=["admin"], iss=None)),
    "wrong-aud": token(RS, claims(roles=["admin"], aud="another-api")),
    "no-aud": token(RS, claims(roles=["admin"], aud=None)),
    "exp-string": token(RS, claims(roles=["admin"], exp="4102444800")),
    "other-key": token(RS, claims(roles=["admin"]), "rsa2.key"),
    "roles-string-admin": token(RS, claims(sub="vic", roles="viewer admin-not")),
}

# The admin claims under the viewer token's signature: a tampered payload.
_vh, _vp, _vs = TOKENS["viewer"].split(".")
_ah, _ap, _as = TOKENS["admin"].split(".")
TOKENS["tampered-payload"] = f"{_vh}.{_ap}.{_vs}"
TOKENS["admin-no-signature"] = f"{_ah}.{_ap}."
TOKENS["admin-padded"] = f"{_ah}.{_ap}.{_as}=="

for name, value in TOKENS.items():
    sys.stdout.write(f"{name} {value}\n")
