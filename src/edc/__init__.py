"""Efficient-Decode Competition: submissions in, verified decode timings out."""

__version__ = "0.1.0"
