"""The one exception type users see.

Every user-facing failure (a missing file, a malformed config, an impossible option, a training
run that diverged) is raised as an `NfieldError` whose message is a single line saying what was
wrong and how to fix it. The CLI prints that line to stderr and exits non-zero; library users
catch it like any exception.
"""


class NfieldError(Exception):
    """A user-facing error with a one-line message (no traceback is shown by the CLI)."""


class TrainingDiverged(NfieldError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


class Interrupted(NfieldError):
    """Training was stopped by Ctrl-C (or the scheduler); a checkpoint was saved to resume from."""
