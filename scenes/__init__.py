"""Scene presets and generators of synthetic scenes with exact ground truth.

`scenes.synthetic` ray casts small analytic scenes into NeRF Blender-synthetic datasets:
``python -m scenes.synthetic primitives data/primitives --size 800 --train 100 --test 200``.
"""
