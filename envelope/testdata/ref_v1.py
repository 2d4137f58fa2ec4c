# Independent re-implementation of docs/FORMAT.md (format v1), written from
# the spec text only. It reproduces the golden vectors of envelope/internal_test.go:
#   python3 envelope/testdata/ref_v1.py   (needs the "cryptography" package)
import hmac, hashlib, struct
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

def hkdf_expand(prk, info, L):
    out, t, i = b"", b"", 1
    while len(out) < L:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        out += t; i += 1
    return out[:L]

def lp(b): return struct.pack(">I", len(b)) + b

def seal(key, salt, mode, kv, org, proj, obj, caller, pt):
    prefix = b"ekme" + bytes([1, mode]) + struct.pack(">I", kv)
    info = prefix + salt + lp(org) + lp(proj) + lp(obj) + lp(caller)
    okm = hkdf_expand(key, info, 64)
    dk, commit = okm[:32], okm[32:]
    header = prefix + salt + commit
    g = AESGCM(dk)
    segs = [pt[i:i+65536] for i in range(0, len(pt), 65536)] or [b""]
    out = header
    for i, s in enumerate(segs):
        final = i == len(segs) - 1
        nonce = i.to_bytes(11, "big") + bytes([1 if final else 0])
        out += g.encrypt(nonce, s, header)
    return out, dk, commit

key = bytes(range(32)); salt = bytes(range(0x80, 0xa0))
ctx = (b"org_golden", b"proj_golden", b"file-golden", b"golden caller")
ct, dk, cm = seal(key, salt, 1, 7, *ctx, b"hello, ekm")
print("single", ct.hex()); print("datakey", dk.hex()); print("commit", cm.hex())
ct, dk, cm = seal(key, salt, 2, 7, *ctx, b"")
print("empty", ct.hex())
pt = bytes(i % 251 for i in range(65537))
ct, dk, cm = seal(key, salt, 2, 7, *ctx, pt)
print("stream sha", hashlib.sha256(ct).hexdigest(), len(ct))
print("stream datakey", dk.hex())
