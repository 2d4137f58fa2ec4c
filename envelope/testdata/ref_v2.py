# Independent re-implementation of docs/FORMAT.md, format version 2, written
# from the spec text only (and XAES-256-GCM from c2sp.org/XAES-256-GCM).
# It checks XAES-256-GCM against the C2SP vectors, then reproduces the
# version 2 golden vectors of envelope/internal_test.go and exits non-zero
# on any difference:
#   python3 envelope/testdata/ref_v2.py   (needs the "cryptography" package)
import hashlib, struct, sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

failed = False

def check(name, got, want):
    global failed
    ok = got == want
    failed |= not ok
    print(("ok  " if ok else "FAIL"), name, got if ok else "%s (want %s)" % (got, want))

# --- XAES-256-GCM, c2sp.org/XAES-256-GCM "Detailed key derivation algorithm"
def aes256_block(key, block):
    e = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return e.update(block) + e.finalize()

def xor(a, b): return bytes(x ^ y for x, y in zip(a, b))

def xaes_kdf(key, nonce):
    L = int.from_bytes(aes256_block(key, bytes(16)), "big")
    K1 = (L << 1) & ((1 << 128) - 1)
    if L >> 127:
        K1 ^= 0x87
    K1 = K1.to_bytes(16, "big")
    M1 = b"\x00\x01X\x00" + nonce[:12]
    M2 = b"\x00\x02X\x00" + nonce[:12]
    return aes256_block(key, xor(M1, K1)) + aes256_block(key, xor(M2, K1)), nonce[12:]

def xaes_seal(key, nonce, pt, aad):
    kx, nx = xaes_kdf(key, nonce)
    return AESGCM(kx).encrypt(nx, pt, aad)

N = b"ABCDEFGHIJKLMNOPQRSTUVWX"
check("xaes kx 01", xaes_kdf(b"\x01" * 32, N)[0].hex(), "c8612c9ed53fe43e8e005b828a1631a0bbcb6ab2f46514ec4f439fcfd0fa969b")
check("xaes ct 01", xaes_seal(b"\x01" * 32, N, b"XAES-256-GCM", b"").hex(), "ce546ef63c9cc60765923609b33a9a1974e96e52daf2fcf7075e2271")
check("xaes kx 03", xaes_kdf(b"\x03" * 32, N)[0].hex(), "e9c621d4cdd9b11b00a6427ad7e559aeedd66b3857646677748f8ca796cb3fd8")
check("xaes ct 03", xaes_seal(b"\x03" * 32, N, b"XAES-256-GCM", b"c2sp.org/XAES-256-GCM").hex(), "986ec1832593df5443a179437fd083bf3fdb41abd740a21f71eb769d")

# The spec's accumulated randomized test, 10 000 iterations.
rng = hashlib.shake_128(b"").digest(10_000 * 600)
pos, acc = 0, hashlib.shake_128()
def read(n):
    global pos
    pos += n
    return rng[pos - n:pos]
for _ in range(10_000):
    key, nonce = read(32), read(24)
    pt = read(read(1)[0]); aad = read(read(1)[0])
    acc.update(xaes_seal(key, nonce, pt, aad))
check("xaes accumulated 10000", acc.hexdigest(32), "e6b9edf2df6cec60c8cbd864e2211b597fb69a529160cd040d56c0c210081939")

# --- The envelope, format version 2 (docs/FORMAT.md)
def lp(b): return struct.pack(">I", len(b)) + b

def seal_v2(key, nonce, mode, kv, org, proj, obj, caller, pt):
    prefix = b"ekme" + bytes([2, mode]) + struct.pack(">I", kv)
    kx, _ = xaes_kdf(key, nonce)
    commit = hashlib.sha256(b"ekm envelope v2 commit" + kx).digest()
    header = prefix + nonce + bytes(8) + commit
    aad = header + lp(org) + lp(proj) + lp(obj) + lp(caller)
    segs = [pt[i:i + 65536] for i in range(0, len(pt), 65536)] or [b""]
    out = header
    for i, s in enumerate(segs):
        flag = 1 if i == len(segs) - 1 else 0
        n_i = xor(nonce[12:], i.to_bytes(11, "big") + bytes([flag]))
        seg = AESGCM(kx).encrypt(n_i, s, aad)
        # Every segment is XAES-256-GCM under the project key with nonce
        # N[:12] || n_i.
        assert seg == xaes_seal(key, nonce[:12] + n_i, s, aad)
        out += seg
    return out, kx, commit

key = bytes(range(32)); nonce = bytes(range(0x80, 0x98))
ctx = (b"org_golden", b"proj_golden", b"file-golden", b"golden caller")
ct, kx, cm = seal_v2(key, nonce, 1, 7, *ctx, b"hello, ekm")
check("v2 data key", kx.hex(), "460c2aa643370400bf3ffae7094a178603fca1b4e7190c1791bfe77bfa5e6121")
check("v2 commitment", cm.hex(), "470ae09d6bfe979abb2414fa2d596ed2e1d81cb875ff430d1215112b69bf781c")
check("v2 single", ct.hex(), "656b6d65020100000007808182838485868788898a8b8c8d8e8f90919293949596970000000000000000470ae09d6bfe979abb2414fa2d596ed2e1d81cb875ff430d1215112b69bf781c53c3b4d3409d22131f775a2ef25b0cf1520d3378d5619ceb6e79")
ct, _, _ = seal_v2(key, nonce, 2, 7, *ctx, b"")
check("v2 empty stream", ct.hex(), "656b6d65020200000007808182838485868788898a8b8c8d8e8f90919293949596970000000000000000470ae09d6bfe979abb2414fa2d596ed2e1d81cb875ff430d1215112b69bf781cef1cda563160366f67d8b3ceec9c598c")
pt = bytes(i % 251 for i in range(65537))
ct, _, _ = seal_v2(key, nonce, 2, 7, *ctx, pt)
check("v2 stream length", len(ct), 74 + 65537 + 32)
check("v2 stream sha256", hashlib.sha256(ct).hexdigest(), "b78d3f1889b0e34e57ada1e775ba3e224fccdcb67e75dbe5714d490367ed2feb")
sys.exit(1 if failed else 0)
