"""Errors of user input: every one names the file (and line or field) and ends the CLI with exit code 2."""

from __future__ import annotations


class InputError(Exception):
    """Bad user input (a spec, trace, profile, option). `str(err)` is one line: 'where: what is wrong'."""

    exit_code = 2

    def __init__(self, where: str, message: str):
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)


class SpecError(InputError):
    """A topology / scenario file that does not validate."""


class EmulationError(Exception):
    """The machine or the emulated network cannot run the experiment (e.g. a path that drops everything): one line
    naming the cause and the fix; the CLI exits with 1 after tearing down what was built."""

    exit_code = 1
