"""tinydyn: dynamic CNNs to integer firmware."""

__version__ = "0.1.0"
