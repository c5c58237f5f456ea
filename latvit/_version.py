"""latvit's version, in one place (the package and every record read it from here)."""

__version__ = "0.1.0"
