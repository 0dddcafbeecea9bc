"""prfleet: the shared library of the prfleet Lambda functions (shipped as the layer)."""

__version__ = "0.1.0"
