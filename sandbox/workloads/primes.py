"""The Python workload: count the primes below N with a sieve, write them to /out, print a summary.
Deterministic, CPU-bound for a moment, and it exercises output files."""
import hashlib
import os
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
sieve = bytearray([1]) * n
sieve[0:2] = b"\0\0"
for i in range(2, int(n**0.5) + 1):
    if sieve[i]:
        sieve[i * i::i] = bytes(len(range(i * i, n, i)))
primes = [i for i in range(n) if sieve[i]]
text = "\n".join(map(str, primes)) + "\n"
out = os.environ.get("OUT_DIR", "/out")
if os.path.isdir(out):
    with open(os.path.join(out, "primes.txt"), "w") as f:
        f.write(text)
print(f"{len(primes)} primes below {n}; sha256 {hashlib.sha256(text.encode()).hexdigest()}")
