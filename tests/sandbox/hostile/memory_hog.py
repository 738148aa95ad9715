"""Allocates and touches memory until something stops it."""

chunks = []
for _ in range(1024):
    block = bytearray(16 * 1024 * 1024)
    block[::4096] = b"x" * len(block[::4096])  # touch every page so it is really resident
    chunks.append(block)
print("allocated 16 GiB and nobody stopped me")
