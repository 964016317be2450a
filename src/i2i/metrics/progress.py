"""Progress of the long inference steps on stderr: tqdm bars and one-line notes.

Bars are removed when their step ends (``leave=False``) and take the next free line, so a bar around them (the
training bar during in-training evaluation) stays intact; notes go through ``tqdm.write`` for the same reason. On a
stderr that is not a terminal (a log file) a bar is redrawn at most every 30 s, as the training bar is.
"""

from __future__ import annotations

import sys

from tqdm import tqdm


def stderr_is_terminal() -> bool:
    """Whether stderr is an interactive terminal (False for a file, a pipe or a closed stream)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def progress_bar(iterable=None, *, desc: str, total: int | None = None, unit: str = "img",
                 enabled: bool = True) -> tqdm:
    """A tqdm bar on stderr that disappears when done.

    Args:
        iterable: what to wrap (``None``: update the bar by hand).
        desc: what is being done, e.g. ``translating`` or ``features testB``.
        total: number of items (``None``: the length of ``iterable`` when it has one).
        unit: what one item is.
        enabled: ``False`` returns a silent bar with the same interface.
    """
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=not enabled, leave=False, dynamic_ncols=True,
                file=sys.stderr, mininterval=0.1 if stderr_is_terminal() else 30.0)


def note(message: str) -> None:
    """One ``i2i: <message>`` line on stderr, printed above any open bar."""
    tqdm.write(f"i2i: {message}", file=sys.stderr)
