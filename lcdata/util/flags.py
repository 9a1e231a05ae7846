"""What every command line of lcdata and lcdata_train shares: one help format, one count/size flag type, and
the old spellings of renamed flags.

* `HelpFormatter` appends ``(default: X)`` to every option that has a default (not None, not False), so a
  flag's help always shows its default; a flag's help names its unit.
* `size_type` is the argparse type of every count or size flag (tokens, characters, sequences): one parser,
  `lcdata.util.config.parse_size`, so ``4M`` is 4,000,000 and ``4Mi`` / ``4MiB`` is 4,194,304 in every command.
  A count flag's default is written with its suffix (``"64Mi"``) so the help prints it as the user would type it.
* `add_alias` keeps a renamed flag's old spelling working for one release, hidden from ``--help``, with a note
  on stderr naming the new spelling (`RENAMED` lists every rename, for the docs and the tests).

Cost: nothing beyond argparse's own (no import of Polars, NumPy or torch).
"""

from __future__ import annotations

import argparse
import sys
import warnings

from ..errors import ConfigError
from .config import SIZE_HELP, parse_size

# every renamed flag: command -> {old spelling: new spelling} (old spellings parse until the next release)
RENAMED: dict[str, dict[str, str]] = {
    "sample": {"--threshold": "--long-threshold"},
    "build": {"--dtype": "--token-dtype"},
    "train": {"--num-workers": "--workers"},
    "eval-loss": {"--threshold": "--delta-threshold", "--labels": "--name"},
}


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help with ``(default: X)`` after every option whose default is set (not None or False) and
    whose help does not already show it with ``%(default)s``."""

    def _get_help_string(self, action: argparse.Action) -> str:
        h = action.help or ""
        d = action.default
        if (not action.option_strings or "%(default)" in h or d is None or d is False or d is argparse.SUPPRESS
                or d == () or d == []):
            return h
        return f"{h} (default: %(default)s)"


def size_type(unit: str = "tokens", minimum: int | None = None):
    """The argparse type of a count or size flag in ``unit``: `parse_size` (``4M`` = 4*10^6, ``4Mi`` = 4*2^20).
    ``minimum`` None leaves the range to the config the flag fills (its message names the field and the fix)."""

    def parse(s: str) -> int:
        try:
            return parse_size(s, minimum, unit)[0]
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = f"count of {unit}"  # argparse names the type in its error messages
    return parse


def size_help(text: str, unit: str = "tokens") -> str:
    """``text`` + the unit and the suffixes a count flag accepts."""
    return f"{text} ({unit}; {SIZE_HELP})" if unit not in text else f"{text} ({SIZE_HELP})"


class _OldSpelling(argparse.Action):
    """A renamed flag's old spelling: stores into the new flag's dest and says the new name on stderr."""

    def __init__(self, option_strings, dest, new: str = "", **kw):
        self.new = new
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: note: {option_string} is now {self.new}; the old spelling works until the next release",
              file=sys.stderr)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def add_alias(parser, old: str, new_action: argparse.Action) -> argparse.Action:
    """Add ``old`` as a hidden spelling of ``new_action`` (the action `add_argument` returned) to ``parser``
    (a parser or an argument group)."""
    zero = new_action.nargs == 0  # store_true / store_false
    return parser.add_argument(old, dest=new_action.dest, action=_OldSpelling, new=new_action.option_strings[0],
                               nargs=0 if zero else new_action.nargs, const=new_action.const if zero else None,
                               type=None if zero else new_action.type, choices=new_action.choices,
                               default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def with_notes(prog: str, fn, *args):
    """``fn(*args)``, its FutureWarnings (a legacy spelling read the old way) printed as one line each,
    ``PROG: note: ...``, instead of Python's two-line warning format."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FutureWarning)
        out = fn(*args)
    for w in caught:
        if issubclass(w.category, FutureWarning):
            print(f"{prog}: note: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return out
