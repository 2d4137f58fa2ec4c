# Independent re-implementation of docs/FORMAT.md, format version 3, written
# from the spec text only (XAES-256-GCM from c2sp.org/XAES-256-GCM, the
# KC-XAES-256-GCM commitment from the formula in FORMAT.md's "Version 3").
# It checks XAES-256-GCM against the C2SP vectors and the KC-XAES-256-GCM
# commitment against the published vectors of ePrint 2025/758, then
# reproduces the version 3 golden vectors of docs/FORMAT.md and exits
# non-zero on any difference:
#   python3 envelope/testdata/ref_v3.py   (needs the "cryptography" package)
import hashlib, hmac, struct, sys
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.cmac import CMAC

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

def xor(*bs):
    out = bs[0]
    for b in bs[1:]:
        assert len(b) == len(out)
        out = bytes(x ^ y for x, y in zip(out, b))
    return out

def cmac_k1(key):
    # L = AES-256(K, 00x16); K1 = L << 1, xor 00x15 || 87 if MSB(L) = 1.
    L = int.from_bytes(aes256_block(key, bytes(16)), "big")
    K1 = (L << 1) & ((1 << 128) - 1)
    if L >> 127:
        K1 ^= 0x87
    return K1.to_bytes(16, "big")

def xaes_kdf(key, nonce):
    K1 = cmac_k1(key)
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

# --- KC-XAES-256-GCM key commitment (docs/FORMAT.md, "Version 3")
#   X1  = AES-256(K, "XCMT" || N[0:12])
#   kc1 = AES-256(K, (N[12:24] || 00 01 00 01) xor X1 xor K1)
#   kc2 = AES-256(K, (N[12:24] || 00 01 00 02) xor X1 xor K1)
#   commitment = kc1 || kc2
def kc_xaes(key, nonce):
    assert len(key) == 32 and len(nonce) == 24
    K1 = cmac_k1(key)
    X1 = aes256_block(key, b"XCMT" + nonce[:12])
    kc1 = aes256_block(key, xor(nonce[12:] + b"\x00\x01\x00\x01", X1, K1))
    kc2 = aes256_block(key, xor(nonce[12:] + b"\x00\x01\x00\x02", X1, K1))
    return kc1 + kc2

# FORMAT.md's description of the same value: kc_i is CMAC-AES-256 (SP 800-38B)
# under K of the 32-byte message "XCMT" || N || 00 01 || 00 0i. Computed here
# with the library's generic CMAC, independently of the formula above.
def kc_xaes_cmac(key, nonce):
    out = b""
    for i in (1, 2):
        c = CMAC(algorithms.AES(key))
        c.update(b"XCMT" + nonce + b"\x00\x01\x00" + bytes([i]))
        out += c.finalize()
    return out

KC01 = "04076b6085eebab138855fe57811c04112eff989d44120dfff662d5475a383c3"
KC03 = "5553cd21d1592b422e3129632a3187eee8a658cdca5c5b32ce86308dcc18e9d1"
check("kc-xaes kc 01", kc_xaes(b"\x01" * 32, N).hex(), KC01)
check("kc-xaes kc 03", kc_xaes(b"\x03" * 32, N).hex(), KC03)
check("kc-xaes kc 01 (cmac)", kc_xaes_cmac(b"\x01" * 32, N).hex(), KC01)
check("kc-xaes kc 03 (cmac)", kc_xaes_cmac(b"\x03" * 32, N).hex(), KC03)
# Both MSB(L) cases of the K1 computation, formula against generic CMAC.
msb = set()
for seed in range(64):
    k = hashlib.sha256(b"ref_v3 kc key %d" % seed).digest()
    n = hashlib.sha256(b"ref_v3 kc nonce %d" % seed).digest()[:24]
    msb.add(aes256_block(k, bytes(16))[0] >> 7)
    if kc_xaes(k, n) != kc_xaes_cmac(k, n):
        check("kc-xaes formula == cmac, seed %d" % seed, kc_xaes(k, n).hex(), kc_xaes_cmac(k, n).hex())
        break
else:
    check("kc-xaes formula == cmac, 64 keys, MSB(L) cases", sorted(msb), [0, 1])

# --- The envelope, format version 3 (docs/FORMAT.md): version 2 with the
# KC-XAES-256-GCM commitment and format version byte 03.
def lp(b): return struct.pack(">I", len(b)) + b

def check_context(org, proj, obj, caller):
    if not (1 <= len(org) <= 256 and 1 <= len(proj) <= 256 and len(obj) <= 256 and len(caller) <= 65536):
        raise ValueError("context outside the size bounds")

def seg_nonce(nonce, i, final):
    # nonce_i = N[12:24] xor (u88(i) || flag)
    return xor(nonce[12:], i.to_bytes(11, "big") + bytes([1 if final else 0]))

def seal_v3(key, nonce, mode, kv, org, proj, obj, caller, pt):
    check_context(org, proj, obj, caller)
    prefix = b"ekme" + bytes([3, mode]) + struct.pack(">I", kv)
    kx, _ = xaes_kdf(key, nonce)
    commit = kc_xaes(key, nonce)
    header = prefix + nonce + bytes(8) + commit
    assert len(header) == 74
    aad = header + lp(org) + lp(proj) + lp(obj) + lp(caller)
    segs = [pt[i:i + 65536] for i in range(0, len(pt), 65536)] or [b""]
    out = header
    for i, s in enumerate(segs):
        n_i = seg_nonce(nonce, i, i == len(segs) - 1)
        seg = AESGCM(kx).encrypt(n_i, s, aad)
        # Every segment is XAES-256-GCM under the project key with nonce
        # N[:12] || n_i.
        assert seg == xaes_seal(key, nonce[:12] + n_i, s, aad)
        out += seg
    return out, kx, commit

class AuthError(Exception): pass

def open_v3_single(key, ct, org, proj, obj, caller):
    check_context(org, proj, obj, caller)
    if ct[:4] != b"ekme": raise ValueError("not an envelope")
    if ct[4] != 3: raise ValueError("unsupported version")
    if ct[5] not in (1, 2): raise ValueError("bad mode")
    if len(ct) < 74: raise ValueError("short header")
    if ct[34:42] != bytes(8): raise ValueError("malformed")
    if ct[5] != 1: raise ValueError("wrong mode")
    header, body = ct[:74], ct[74:]
    nonce = header[10:34]
    # Commitment first, in constant time, before any GCM decryption.
    if not hmac.compare_digest(kc_xaes(key, nonce), header[42:74]):
        raise AuthError("commitment")
    if len(body) < 16: raise ValueError("truncated")
    kx, _ = xaes_kdf(key, nonce)
    aad = header + lp(org) + lp(proj) + lp(obj) + lp(caller)
    try:
        return AESGCM(kx).decrypt(seg_nonce(nonce, 0, True), body, aad)
    except InvalidTag:
        raise AuthError("tag")

def fails(f, *a):
    try:
        f(*a)
    except AuthError as e:
        return "AuthError(%s)" % e
    return "opened"

key = bytes(range(32)); nonce = bytes(range(0x80, 0x98))
ctx = (b"org_golden", b"proj_golden", b"file-golden", b"golden caller")
check("v3 nonce", nonce.hex(), "808182838485868788898a8b8c8d8e8f9091929394959697")
ct, kx, cm = seal_v3(key, nonce, 1, 7, *ctx, b"hello, ekm")
check("v3 data key", kx.hex(), "460c2aa643370400bf3ffae7094a178603fca1b4e7190c1791bfe77bfa5e6121")
check("v3 commitment", cm.hex(), "d8335ef144aa9a5aa9e72fbbf77cb98d023bcb719033d2272743b294a8d1d5cb")
check("v3 commitment (cmac)", kc_xaes_cmac(key, nonce).hex(), "d8335ef144aa9a5aa9e72fbbf77cb98d023bcb719033d2272743b294a8d1d5cb")
check("v3 single", ct.hex(), "656b6d65030100000007808182838485868788898a8b8c8d8e8f90919293949596970000000000000000d8335ef144aa9a5aa9e72fbbf77cb98d023bcb719033d2272743b294a8d1d5cb53c3b4d3409d22131f7721e8efad03beeee73ffec84ac13e1660")
check("v3 single length", len(ct), len(b"hello, ekm") + 90)
check("v3 single opens", open_v3_single(key, ct, *ctx), b"hello, ekm")
check("v3 single other key", fails(open_v3_single, bytes(32), ct, *ctx), "AuthError(commitment)")
check("v3 single other context", fails(open_v3_single, key, ct, *ctx[:3], b"other caller"), "AuthError(tag)")
ct, _, _ = seal_v3(key, nonce, 2, 7, *ctx, b"")
check("v3 empty stream", ct.hex(), "656b6d65030200000007808182838485868788898a8b8c8d8e8f90919293949596970000000000000000d8335ef144aa9a5aa9e72fbbf77cb98d023bcb719033d2272743b294a8d1d5cbfe48898ca778f3559eaf5850558bdf25")
pt = bytes(i % 251 for i in range(65537))
ct, _, _ = seal_v3(key, nonce, 2, 7, *ctx, pt)
check("v3 stream length", len(ct), 74 + 65537 + 32)
check("v3 stream sha256", hashlib.sha256(ct).hexdigest(), "4a1328aa01a21dcbfd9499689c3faf6addcc1666682a21b0e7099ad4231cfccc")
sys.exit(1 if failed else 0)
