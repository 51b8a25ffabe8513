"""The one base class of errors a user caused (a bad file, key, flag or value), so that a CLI can catch them
all without importing every package that raises one."""
from __future__ import annotations


class UserError(ValueError):
    """An input the user can fix; its message is one line naming the file, key or flag and what was expected.

    The packages' own errors (HypError, DatasetError, CheckpointError, RunDirError, YamlFileError, ...)
    subclass it; a CLI logs it as ``error: ...`` without a traceback (``utils.io.cli.run_cli``). It stays a
    ValueError so that callers that caught ValueError before keep working.
    """
