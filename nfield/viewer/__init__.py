"""A web viewer for runs: ``nfield view RUN_DIR`` and ``--viewer`` on the training commands.

`nfield.viewer.server` serves the page (viser) and schedules the drawing, `nfield.viewer.displays`
draws each kind of run, `nfield.viewer.live` draws a training run between its steps (``--viewer``),
`nfield.cli.view` follows a run's checkpoints (``nfield view``), and
`nfield.viewer.cameras` converts the browser's camera. The submodules are imported where they are
used, so the training commands load viser only when ``--viewer`` is given.
"""
