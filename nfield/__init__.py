"""nfield: neural fields and implicit neural representations in PyTorch."""

from nfield.errors import NfieldError

__version__ = "0.2.0"

__all__ = ["NfieldError", "__version__"]
