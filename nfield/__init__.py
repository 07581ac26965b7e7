"""nfield: neural fields and implicit neural representations in PyTorch."""

from nfield.errors import NfieldError

__version__ = "0.3.0"

__all__ = ["NfieldError", "__version__"]
