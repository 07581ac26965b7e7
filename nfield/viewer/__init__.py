"""A web viewer for runs: ``nfield view RUN_DIR`` and ``--viewer`` on the training commands.

`nfield.viewer.server` serves the page (viser) and schedules the drawing, `nfield.viewer.scenes`
draws each kind of run, `nfield.viewer.serve` follows a run's checkpoints (``nfield view``),
`nfield.viewer.live` draws a training run between its steps (``--viewer``), and
`nfield.viewer.cameras` converts the browser's camera. The submodules are imported where they are
used, so the training commands load viser only when ``--viewer`` is given.
"""
