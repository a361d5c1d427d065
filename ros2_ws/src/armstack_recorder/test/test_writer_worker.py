"""WriterWorker: the writer on its own thread; saves durable in order, bounded backlog."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from armstack_recorder.lerobot_dataset import LeRobotDatasetReader, LeRobotDatasetWriter
from armstack_recorder.session import Frame
from armstack_recorder.validate import validate_dataset
from armstack_recorder.writer_worker import WriterWorker


def frames(syn, episode: int, n: int, t0: float = 100.0) -> list[Frame]:
    return [Frame(syn.state(episode, k), syn.action(episode, k), syn.env_state(episode, k),
                  {"top": syn.image(k, episode, 0), "wrist": syn.image(k, episode, 1)},
                  t0 + k / syn.fps) for k in range(n)]


class Saves:
    """Collects save callbacks; checks at callback time what is on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.results: list[tuple] = []
        self.done = threading.Event()

    def __call__(self, saved, error) -> None:
        on_disk = LeRobotDatasetReader(self.root).num_episodes
        self.results.append((saved, error, on_disk))
        self.done.set()


def test_episodes_are_durable_in_order_while_the_caller_never_waits(tmp_path, synthetic):
    root = tmp_path / "ds"
    worker = WriterWorker(LeRobotDatasetWriter(synthetic.config(root)), max_pending_frames=500)
    saves = Saves(root)
    for episode, n in ((0, 20), (1, 12)):
        worker.start(f"task {episode}")
        assert all(worker.frame(f) for f in frames(synthetic, episode, n))
        worker.save(saves)  # queued: the next start comes right behind it
    worker.close()
    (s0, e0, disk0), (s1, e1, disk1) = saves.results
    assert e0 is None and e1 is None
    assert (s0.episode_index, s0.frames, s1.episode_index, s1.frames) == (0, 20, 1, 12)
    # each callback came after its episode was committed, before the next one was
    assert (disk0, disk1) == (1, 2)
    reader = LeRobotDatasetReader(root)
    assert reader.tasks == ["task 0", "task 1"]
    assert synthetic.read(reader.frame(20 + 11)["observation.images.wrist"]) == (11, 1, 1)
    np.testing.assert_array_equal(reader.frame(5)["observation.state"], synthetic.state(0, 5))
    assert validate_dataset(root).ok


def test_a_broken_episode_fails_its_save_and_leaves_the_dataset_as_it_was(tmp_path, synthetic):
    root = tmp_path / "ds"
    worker = WriterWorker(LeRobotDatasetWriter(synthetic.config(root)), max_pending_frames=500)
    saves = Saves(root)
    worker.start("task")
    good = frames(synthetic, 0, 5)
    for f in good[:3]:
        worker.frame(f)
    worker.frame(Frame(np.zeros(9), good[3].action, good[3].env_state, good[3].images, 200.0))
    worker.frame(good[4])  # after the failure: ignored
    worker.save(saves)
    worker.start("task")
    for f in frames(synthetic, 1, 4):
        worker.frame(f)
    worker.save(saves)
    worker.close()
    (s0, e0, disk0), (s1, e1, disk1) = saves.results
    assert s0 is None and "state has 9 values" in str(e0) and disk0 == 0
    assert e1 is None and s1.episode_index == 0 and s1.frames == 4 and disk1 == 1
    assert worker.pending_frames == 0


class BlockingWriter:
    """Stands in for the writer: add_frame waits until released (a stalled encoder/disk)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.added = 0
        self.recording = False
        self.closed = False
        self.num_episodes = 0

    def start_episode(self, task: str) -> int:
        self.recording = True
        return 0

    def add_frame(self, *args, **kwargs) -> None:
        assert self.release.wait(10.0)
        self.added += 1

    def discard_episode(self) -> None:
        self.recording = False

    def close(self) -> None:
        self.closed = True


def test_frames_beyond_the_backlog_are_refused_not_waited_for():
    writer = BlockingWriter()
    worker = WriterWorker(writer, max_pending_frames=5)
    frame = Frame(np.zeros(2), np.zeros(2), None, {}, 0.0)
    worker.start("t")
    accepted = [worker.frame(frame) for _ in range(20)]
    # one frame is inside add_frame (blocked), five wait: the rest are refused at once
    assert accepted.count(True) in (5, 6) and accepted[-1] is False
    assert worker.peak_pending_frames == 5
    writer.release.set()
    worker.discard()
    worker.close()
    assert writer.added == accepted.count(True) and writer.closed and not writer.recording
    with pytest.raises(RuntimeError, match="closed"):
        worker.start("t")


def test_niceness_lowers_the_writer_thread_alone():
    writer = BlockingWriter()
    writer.release.set()
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    worker = WriterWorker(writer, max_pending_frames=5, niceness=3)
    try:
        assert os.getpriority(os.PRIO_PROCESS, worker.thread_id) == min(19, base + 3)
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base
    finally:
        worker.close()
    with pytest.raises(ValueError, match="niceness"):
        WriterWorker(writer, max_pending_frames=5, niceness=20)
