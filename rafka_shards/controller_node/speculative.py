"""The leader's speculative image: the applied image plus its own proposals not yet committed, for one term.

Runs in the controller process (the frontend validates each proposal against it, so a command that conflicts with
one still in flight, say a second create of one topic, never enters the log). Pure: no I/O, no clock. It belongs to
one leadership: it is dropped when this node stops leading (``reset``) and stale once the term moved.
"""

from __future__ import annotations

from controller.commands import Command
from controller.image import MetadataImage
from controller.state_machine import apply


class SpeculativeImage:
    def __init__(self) -> None:
        self._image: MetadataImage | None = None
        self._term = -1

    def current(self, term: int) -> MetadataImage | None:
        """The image with this leadership's proposals applied; None once leadership moved (or before any)."""
        return self._image if self._term == term else None

    def begin(self, applied: MetadataImage, term: int) -> MetadataImage:
        """The current image of ``term``, started from ``applied`` if this leadership has none yet."""
        if self.current(term) is None:
            self._image, self._term = applied, term
        assert self._image is not None
        return self._image

    def proposed(self, base: MetadataImage, cmd: Command, index: int) -> None:
        """``cmd`` was proposed at ``index`` on top of ``base`` (the current image it was validated against)."""
        self._image = apply(base, cmd, index)

    def reset(self) -> None:
        """This node no longer leads: its proposals of that leadership may never commit."""
        self._image = None
