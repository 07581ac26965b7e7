"""Fields: an encoding composed with a network (task-specific fields add heads).

`FIELDS` is the registry of the fields a run builds from its config.json (``otype`` -> config and
module): the radiance fields (`nfield.fields.radiance`) and the signed distance fields
(`nfield.fields.sdf`), both imported here so that it holds every one of them.
"""

from nfield.fields import radiance, sdf  # noqa: F401 (their fields register in FIELDS)
from nfield.fields.field import Field, FieldConfig, field_config_from_dict, field_config_to_dict
from nfield.fields.registry import FIELDS

__all__ = ["FIELDS", "Field", "FieldConfig", "field_config_from_dict", "field_config_to_dict"]
