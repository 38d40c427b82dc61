"""bench.chaos.lazyfs.WriteCache against a model: what readers see, and what survives a plug pull.

The model is two byte strings per file: ``visible`` (every reader's view) and ``durable`` (the backing file). A
write or truncate changes ``visible``; sync copies it to ``durable``; a plug pull resets ``visible`` to ``durable``.
"""

from __future__ import annotations

import os
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.chaos.lazyfs import PAGE_BYTES, FileState, WriteCache

MAX_OFFSET = 5 * PAGE_BYTES

ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, MAX_OFFSET), st.binary(min_size=1, max_size=2 * PAGE_BYTES + 7)),
        st.tuples(st.just("truncate"), st.integers(0, MAX_OFFSET)),
        st.tuples(st.just("sync")),
        st.tuples(st.just("pull")),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(initial=st.binary(max_size=3 * PAGE_BYTES), steps=ops)
def test_reads_see_every_write_and_a_plug_pull_keeps_exactly_what_was_synced(initial: bytes, steps: list) -> None:  # type: ignore[type-arg]
    with tempfile.TemporaryFile() as f:
        fd = f.fileno()
        os.pwrite(fd, initial, 0)
        cache = WriteCache()
        state = FileState.of(len(initial))
        visible, durable = bytearray(initial), bytearray(initial)
        for step in steps:
            if step[0] == "write":
                _, offset, data = step
                cache.write(state, fd, offset, data)
                if offset > len(visible):
                    visible.extend(bytes(offset - len(visible)))
                visible[offset : offset + len(data)] = data
            elif step[0] == "truncate":
                cache.truncate(state, step[1])
                del visible[step[1] :]
                visible.extend(bytes(step[1] - len(visible)))
            elif step[0] == "sync":
                cache.sync(state, fd)
                durable = bytearray(visible)
                assert not state.dirty and cache.buffered_bytes == 0
            else:
                cache.pull_plug(state)
                visible = bytearray(durable)
                assert cache.buffered_bytes == 0
            assert state.size == len(visible)
            assert cache.read(state, fd, 0, MAX_OFFSET * 3) == bytes(visible)
            assert cache.read(state, fd, PAGE_BYTES - 3, 10) == bytes(visible[PAGE_BYTES - 3 : PAGE_BYTES + 7])
            assert os.pread(fd, MAX_OFFSET * 3, 0) == bytes(durable)  # the backing file changes only at sync


def test_writes_beyond_the_buffer_cap_get_enospc() -> None:
    with tempfile.TemporaryFile() as f:
        cache = WriteCache(buffer_bytes_max=2 * PAGE_BYTES)
        state = FileState.of(0)
        assert cache.write(state, f.fileno(), 0, b"x" * PAGE_BYTES * 2) == PAGE_BYTES * 2
        try:
            cache.write(state, f.fileno(), PAGE_BYTES * 2, b"y")
        except OSError as e:
            assert e.errno == 28  # ENOSPC
        else:
            raise AssertionError("a write past the cap was buffered")
        cache.sync(state, f.fileno())
        assert cache.write(state, f.fileno(), PAGE_BYTES * 2, b"y") == 1  # synced pages no longer count
