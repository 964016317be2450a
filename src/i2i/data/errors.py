"""The one exception type of the data package.

Every problem with user data (missing folders, wrong layout, corrupt files, images too small for the
crop) is raised as :class:`DataError` with ONE line that names the offending path or config key and
the fix, before training starts wherever possible.
"""

from __future__ import annotations


class DataError(ValueError):
    """Bad dataset input: the message names the path (or config key) and how to fix it."""
