"""AES-GCM decryption of 16 MB chunks in a loop, fresh buffers against decrypt_into a reused one."""
import os, time
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
a = AESGCM(AESGCM.generate_key(256)); n = os.urandom(12)
d = os.urandom(16 * 2**20); c = n + a.encrypt(n, d, b"x")
keep = []
t = time.perf_counter()
for i in range(64):
    blob = bytes(c)
    keep.append(a.decrypt(blob[:12], blob[12:], b"x")[:1 << 20])
print("fresh buffers GB/s", round(64 * 16 / 1024 / (time.perf_counter() - t), 2))
keep, buf, cb = [], bytearray(16 * 2**20), bytearray(len(c))
t = time.perf_counter()
for i in range(64):
    cb[:] = c
    m = memoryview(cb)
    a.decrypt_into(m[:12], m[12:], b"x", buf)
    keep.append(bytes(buf[:1 << 20]))
print("reused buffers GB/s", round(64 * 16 / 1024 / (time.perf_counter() - t), 2))
