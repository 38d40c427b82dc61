"""What the controller's callers see when it cannot serve them now (the controller process's shells raise these)."""

from __future__ import annotations

from controller.state_machine import CommandRejected, Rejection, RejectKind


class ControllerUnavailable(Exception):
    """No leader, or leadership moved before the request committed: the caller may retry."""


def unavailable(message: str) -> CommandRejected:
    """A proposal or read that found no leader to take it, or lost it: CommandRejected(CONTROLLER_UNAVAILABLE)."""
    return CommandRejected(Rejection(RejectKind.CONTROLLER_UNAVAILABLE, message))
