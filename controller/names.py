"""Kafka's topic name rule, enforced by the metadata state machine before a name can reach the log or a path.

Runs in every process. Mirrors Kafka's ``Topic.java`` validation.
"""

from __future__ import annotations

# Kafka's topic name rule (Topic.java): 1-249 characters of [a-zA-Z0-9._-], and not "." or "..".
TOPIC_NAME_LENGTH_MAX = 249
_TOPIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def topic_name_error(name: str | None) -> str | None:
    """Return why ``name`` is not a valid Kafka topic name, or None when it is valid."""
    if name is None or name == "":
        return "topic name is empty"
    if name in (".", ".."):
        return f"topic name cannot be {name!r}"
    if len(name) > TOPIC_NAME_LENGTH_MAX:
        return f"topic name is {len(name)} characters, the limit is {TOPIC_NAME_LENGTH_MAX}"
    bad = sorted(set(name) - _TOPIC_CHARS)
    if bad:
        return f"topic name {name!r} contains characters outside [a-zA-Z0-9._-]: {''.join(bad)!r}"
    return None
