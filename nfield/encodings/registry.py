"""The encoding registry: ``otype`` name -> (config dataclass, module class), and the way to
tiny-cuda-nn's encoding JSON."""

from typing import Any

from nfield.components import Registry
from nfield.errors import NfieldError

ENCODINGS = Registry("encoding")


def tcnn_encoding_config(cfg: Any) -> dict[str, Any]:
    """tiny-cuda-nn's encoding JSON for an encoding config: its ``tcnn_config()``.

    The configs of the encodings tiny-cuda-nn has (``HashGrid``, ``DenseGrid``, ``Frequency``,
    ``SphericalHarmonics``, ``Identity``) write their own JSON, in tiny-cuda-nn's key names with
    ``otype``; `nfield.backends.tcnn` builds its modules from it.

    Raises:
        NfieldError: the encoding has no tiny-cuda-nn counterpart, or this config of it cannot be
            expressed there.

    Example::

        >>> from nfield.encodings import HashGridConfig
        >>> tcnn_encoding_config(HashGridConfig(n_levels=2))["otype"]
        'HashGrid'
    """
    to_tcnn = getattr(cfg, "tcnn_config", None)
    if to_tcnn is None:
        raise NfieldError(f"tcnn: the {ENCODINGS.otype(cfg)} encoding has no tiny-cuda-nn counterpart; use backend 'auto'")
    return to_tcnn()
