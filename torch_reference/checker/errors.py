"""The checker's exceptions, and calling the user's code so that its failures are framed as the user's."""

from __future__ import annotations

import os
import traceback

_OWN_DIR = os.path.dirname(os.path.abspath(__file__))


class CheckError(Exception):
    """The check could not be made: what was given does not follow the convention. The message says what."""


class UserCodeError(CheckError):
    """The user's forward, backward, step or reference raised; the message holds its own traceback (the frames
    inside the checker are left out)."""


def call_user(role: str, function, *args, **kwargs):
    """``function(*args, **kwargs)``; an exception inside it becomes a UserCodeError that names the role
    ("your backward", "the reference") and shows the user's frames only."""
    try:
        return function(*args, **kwargs)
    except CheckError:
        raise
    except Exception as error:
        frames = [frame for frame in traceback.extract_tb(error.__traceback__)
                  if not os.path.abspath(frame.filename).startswith(_OWN_DIR)]
        shown = "".join(traceback.format_list(frames)) if frames else ""
        where = getattr(function, "__qualname__", getattr(function, "__name__", repr(function)))
        message = (f"{role} ({where}) raised {type(error).__name__}: {error}\n"
                   f"Traceback of {role} (most recent call last):\n{shown}"
                   f"{type(error).__name__}: {error}")
        raise UserCodeError(message) from error
