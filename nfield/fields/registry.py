"""The field registry: a run's field config ``otype`` -> (config dataclass, module class).

`FIELDS` holds the fields a run builds from the "field" section of its config.json: the radiance
fields of train-nerf (``VanillaNeRF``, ``NGP``, ``Generic``, ``KiloNeRF``; `nfield.fields.radiance`)
and the signed distance fields of fit-sdf (``Field``, ``NGLOD``; `nfield.fields.sdf`). Fields take
their config first: ``FIELDS.build(cfg, aabb)`` is ``RadianceField(cfg, aabb)``.
"""

from nfield.components import Registry

FIELDS = Registry("field", config_first=True)
