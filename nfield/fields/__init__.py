"""Fields: an encoding composed with a network (task-specific fields add heads)."""

from nfield.fields.field import Field, FieldConfig, field_config_from_dict, field_config_to_dict

__all__ = ["Field", "FieldConfig", "field_config_from_dict", "field_config_to_dict"]
