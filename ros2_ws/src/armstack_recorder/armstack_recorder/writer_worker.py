"""The dataset writer on its own thread: the recorder's FrameSink (no ROS).

The sampling loop only enqueues (start, frame, save, discard); this thread does everything
that touches disk or waits on encoders, in order. So an episode's save has completed, durably,
before the next episode's start is executed, while the sampling loop already collects the next
episode's frames. Frames waiting here are bounded (`max_pending_frames`): past that, frame()
refuses and the session counts the sample as dropped ("writer:backlog") instead of blocking.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time

from armstack_recorder.lerobot_dataset import LeRobotDatasetWriter
from armstack_recorder.session import Frame, SaveCallback, SavedEpisode

logger = logging.getLogger(__name__)


class WriterWorker:
    """Owns a LeRobotDatasetWriter; every method but close() returns at once."""

    def __init__(self, writer: LeRobotDatasetWriter, max_pending_frames: int,
                 niceness: int = 0) -> None:
        """`niceness` is added to this worker's thread alone (Linux schedules threads): the
        video encoder threads it starts inherit it, the caller's threads keep their priority."""
        if not isinstance(max_pending_frames, int) or max_pending_frames < 1:
            raise ValueError(f"WriterWorker.max_pending_frames must be an int >= 1, "
                             f"got {max_pending_frames!r}")
        if not isinstance(niceness, int) or not 0 <= niceness <= 19:
            raise ValueError(f"WriterWorker.niceness must be an int in [0, 19], got {niceness!r}")
        self._writer = writer
        self._max_pending = max_pending_frames
        self._queue: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0
        self._peak = 0
        self._saving = False
        self._broken: BaseException | None = None  # the current episode failed in the writer
        self._closed = False
        # not a daemon: an exiting process still finishes the saves it has queued
        self._thread = threading.Thread(target=self._run, name="dataset-writer")
        self._thread.start()
        if niceness:
            # Before anything is queued, so every encoder thread it starts inherits it.
            tid = self._thread.native_id
            os.setpriority(os.PRIO_PROCESS, tid,
                           min(19, os.getpriority(os.PRIO_PROCESS, tid) + niceness))

    @property
    def num_episodes(self) -> int:
        """Episodes in the dataset (committed ones; read on this thread, a plain int)."""
        return self._writer.num_episodes

    @property
    def thread_id(self) -> int:
        """The writer thread's kernel id (its scheduling priority: os.getpriority)."""
        return self._thread.native_id

    @property
    def pending_frames(self) -> int:
        return self._pending

    @property
    def peak_pending_frames(self) -> int:
        return self._peak

    @property
    def saving(self) -> bool:
        return self._saving

    # ------------------------------------------------------------------ FrameSink

    def start(self, task: str) -> None:
        self._put(("start", task))

    def frame(self, frame: Frame) -> bool:
        with self._lock:
            if self._pending >= self._max_pending:
                return False
            self._pending += 1
            self._peak = max(self._peak, self._pending)
        self._put(("frame", frame))
        return True

    def save(self, on_done: SaveCallback) -> None:
        self._saving = True
        self._put(("save", on_done))

    def discard(self) -> None:
        self._put(("discard",))

    def close(self) -> None:
        """Run everything queued (saves complete), then close the writer, which discards an
        episode still open. Blocks until done."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(("close",))
        self._thread.join()

    # ------------------------------------------------------------------ the thread

    def _put(self, command: tuple) -> None:
        if self._closed:
            raise RuntimeError("the dataset writer is closed")
        self._queue.put(command)

    def _run(self) -> None:
        while True:
            command = self._queue.get()
            kind = command[0]
            try:
                if kind == "close":
                    self._writer.close()
                    return
                getattr(self, "_do_" + kind)(*command[1:])
            except Exception:  # a bug must not kill the thread that holds the saves
                logger.exception("dataset writer: %s failed", kind)

    def _do_start(self, task: str) -> None:
        self._broken = None
        if self._writer.recording:
            logger.error("an unsaved episode was still open in the writer: discarded")
            self._writer.discard_episode()
        try:
            self._writer.start_episode(task)
        except Exception as exc:
            self._broken = exc
            logger.error("cannot start an episode: %s", exc)

    def _do_frame(self, frame: Frame) -> None:
        with self._lock:
            self._pending -= 1
        if self._broken is not None or not self._writer.recording:
            return
        try:
            self._writer.add_frame(frame.state, frame.action, frame.env_state, frame.images,
                                   timestamp=frame.time_s)
        except Exception as exc:
            self._broken = exc
            logger.error("episode broken, its frames are dropped: %s", exc)
            self._writer.discard_episode()

    def _do_save(self, on_done: SaveCallback) -> None:
        try:
            if self._broken is not None:
                raise RuntimeError(f"the episode failed while recording: {self._broken}")
            t0 = time.perf_counter()
            report = self._writer.save_episode()
            saved = SavedEpisode(episode_index=report.episode_index, frames=report.length,
                                 save_s=time.perf_counter() - t0,
                                 encode_wait_s=report.encode_wait_s,
                                 encoder_blocked_s=report.encoder_blocked_s)
        except Exception as exc:
            if self._writer.recording:
                self._writer.discard_episode()
            self._saving = False
            on_done(None, exc)
            return
        self._saving = False
        on_done(saved, None)

    def _do_discard(self) -> None:
        self._broken = None
        if self._writer.recording:
            self._writer.discard_episode()
