"""Spins forever."""

while True:
    pass
