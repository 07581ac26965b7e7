"""The portable KiloNeRF export: `save_kilonerf` writes a field (and its occupied-cells mask) as
safetensors with a JSON header, `load_kilonerf` reads it back."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from nfield.components import config_from_dict
from nfield.errors import NfieldError
from nfield.fields.kilonerf.field import KiloNeRFConfig, KiloNeRFField
from nfield.outputs import atomic_path


def save_kilonerf(path, field: KiloNeRFField, occupied: torch.Tensor | None = None) -> None:
    """Write `field` as safetensors: every stacked parameter under its module name, the (n_cells,)
    `occupied_cells` mask when given, and a JSON header (format, grid resolution, box, layer sizes)
    in the file's metadata, so other renderers can load it."""
    from safetensors.torch import save_file

    tensors = {name: value.detach().cpu().contiguous() for name, value in field.state_dict().items()}
    if occupied is not None:
        tensors["occupied_cells"] = occupied.detach().cpu().to(torch.uint8)
    header = {
        "format": "nfield-kilonerf-1",
        "resolution": list(field.resolution),
        "aabb": field.aabb.tolist(),
        "config": dataclasses.asdict(field.cfg),
        "layers": {name: list(tensor.shape) for name, tensor in tensors.items() if name.endswith("weight")},
    }
    path = Path(path)
    with atomic_path(path) as temporary:  # readers never see a half-written file
        save_file(tensors, str(temporary), metadata={"kilonerf": json.dumps(header)})


def load_kilonerf(path) -> tuple[KiloNeRFField, torch.Tensor | None]:
    """The field written by `save_kilonerf` (on the CPU) and its occupied-cells mask (or None)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as handle:
            header = json.loads((handle.metadata() or {})["kilonerf"])
        tensors = load_file(str(path))
        cfg = config_from_dict(KiloNeRFConfig, header["config"], what="KiloNeRF")  # exports before 0.3 say "hidden"
        field = KiloNeRFField(cfg, torch.tensor(header["aabb"]))
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise NfieldError(
            f"{path}: not a KiloNeRF export ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
        ) from None
    occupied = tensors.pop("occupied_cells", None)
    field.load_state_dict(tensors)
    return field, None if occupied is None else occupied.bool()
