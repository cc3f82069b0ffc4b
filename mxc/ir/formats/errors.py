"""The one error every file-format reader raises on malformed input.

A :class:`FormatError` names the file (or ``'<bytes>'``/``'<string>'``), where in it the problem
was found (a byte offset for binary formats, a node index for symbol JSON) and what was
expected there, so a user can tell a truncated download from a wrong file type.
"""
from __future__ import annotations

from ...base import MXNetError


class FormatError(MXNetError):
    """A file does not follow the format it claims to be in.

    ``source`` is the file name shown to the user, ``offset`` the byte offset of the problem
    (``None`` where it has no meaningful offset, e.g. a symbol JSON node).
    """

    def __init__(self, message: str, *, source: str | None = None,
                 offset: int | None = None) -> None:
        self.source = source
        self.offset = offset
        self.detail = message
        where = source if source is not None else "<unknown>"
        if offset is not None:
            where = f"{where}: byte {offset}"
        super().__init__(f"{where}: {message}")
