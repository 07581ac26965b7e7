"""What a command-line flag's help says about its value when it is not given.

Flags whose unset value is None mean "the preset's" or "what the help text says" (the run's own
image, the training images' width...); tyro would print "(default: None)" after them, which says
neither. Annotate such a flag ``Annotated[Optional[int], STATED]`` (its help states the default) or
``Annotated[Optional[int], PRESET]`` (a model hyper-parameter: the chosen model's preset value).
"""

from __future__ import annotations

import tyro

#: The help text says what an unset flag means: no hint after it.
STATED = tyro.conf.arg(help_behavior_hint="")
#: An unset model hyper-parameter keeps the chosen model's preset value.
PRESET = tyro.conf.arg(help_behavior_hint="(default: the model's preset)")
