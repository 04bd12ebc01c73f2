"""argparse help that shows each flag's default once."""

from __future__ import annotations

import argparse


class DefaultsOnceFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" unless the help already says its default, or there is none to show (None, a
    False switch)."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        default = action.default
        if "default" in help_text or default is None or default is False or default == argparse.SUPPRESS:
            return help_text
        return super()._get_help_string(action)
