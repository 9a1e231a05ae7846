"""Typed errors. Every error names the bad value and says what to do about it.

`LcdataError` is the root; the CLI turns any of them into a one-paragraph message and exit code 2
(never a traceback). Input errors carry the file and, where known, the line/row, so a user can open
the exact record. User input is never checked with `assert`.
"""

from __future__ import annotations


class LcdataError(Exception):
    """Base class of every error lcdata raises on purpose."""


class ConfigError(LcdataError, ValueError):
    """A configuration value is invalid (flag, config field, spec file)."""


class InputError(LcdataError):
    """An input file cannot be read as asked.

    Attributes ``path``, ``line`` (1-based, or None), ``reason`` (a short machine-readable tag, the same
    tags `--on-error skip` counts by) and ``fix`` (what to do).
    """

    def __init__(self, path: str, reason: str, detail: str, fix: str, line: int | None = None):
        self.path, self.reason, self.detail, self.fix, self.line = path, reason, detail, fix, line
        where = f"{path}, line {line}" if line is not None else path
        super().__init__(f"{where}: {detail} [{reason}]. {fix}")

    def __reduce__(self):  # survive pickling across worker processes
        return (InputError, (self.path, self.reason, self.detail, self.fix, self.line))


class TokenizerError(LcdataError):
    """A tokenizer file is missing or is not a Hugging Face `tokenizers` JSON file."""


class MissingDependencyError(LcdataError, ImportError):
    """An optional dependency is needed for this feature; the message names the extra to install."""
