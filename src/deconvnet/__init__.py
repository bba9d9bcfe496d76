"""DeconvNet reproduction."""
__version__ = "0.1.0"
