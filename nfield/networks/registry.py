"""The network registry: ``otype`` name -> (config dataclass, module class), and the way to
tiny-cuda-nn's network JSON."""

from typing import Any

from nfield.components import Registry
from nfield.errors import NfieldError

NETWORKS = Registry("network")


def tcnn_network_config(cfg: Any) -> dict[str, Any]:
    """tiny-cuda-nn's network JSON for a network config: its ``tcnn_config()``.

    `MLPConfig` writes its own JSON (``FullyFusedMLP`` or ``CutlassMLP``, see
    `nfield.backends.tcnn.tcnn_mlp_config`); `nfield.backends.tcnn` builds its modules from it.

    Raises:
        NfieldError: the network has no tiny-cuda-nn counterpart, or an activation tiny-cuda-nn
            does not have.

    Example::

        >>> from nfield.networks import MLPConfig
        >>> tcnn_network_config(MLPConfig(n_neurons=64, n_hidden_layers=2))["otype"]
        'FullyFusedMLP'
    """
    to_tcnn = getattr(cfg, "tcnn_config", None)
    if to_tcnn is None:
        raise NfieldError(f"tcnn: the {NETWORKS.otype(cfg)} network has no tiny-cuda-nn counterpart; use backend 'auto'")
    return to_tcnn()
