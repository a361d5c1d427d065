"""Sampler: latest message at or before each dataset clock tick, by stamp, with staleness."""

from __future__ import annotations

import random

import pytest
from armstack_recorder.sampler import (
    MISSING,
    NS,
    STALE,
    Sampler,
    SamplerConfig,
    StreamConfig,
)

MS = 1_000_000
T0 = 1_700_000_000 * NS  # an epoch-like origin: ns arithmetic must stay exact there


def make(fps: int = 30, delay_s: float = 0.05, max_lag_s: float = 0.5, **ages: float) -> Sampler:
    ages = ages or {"a": 0.1}
    streams = tuple(StreamConfig(name, age) for name, age in ages.items())
    return Sampler(SamplerConfig(fps=fps, streams=streams, delay_s=delay_s, max_lag_s=max_lag_s))


def feed(sampler: Sampler, stream: str, stamps_ns: list[int], latency_ns: int = 2 * MS) -> None:
    """Each message carries its own stamp as value and arrives latency_ns after it."""
    for stamp in stamps_ns:
        sampler.add(stream, stamp, stamp, stamp + latency_ns)


def run(sampler: Sampler, until_ns: int, step_ns: int = 10 * MS, start_ns: int = T0) -> list:
    """Poll every step_ns from start to until + delay; the decided samples."""
    out, now = [], start_ns
    while now <= until_ns + sampler.config.delay_s * NS + step_ns:
        result = sampler.poll(now)
        assert result.overrun == 0
        out += result.samples
        now += step_ns
    return out


def test_each_tick_takes_the_latest_message_at_or_before_it():
    s = make(fps=30)
    stamps = [T0 - 20 * MS + k * 20 * MS for k in range(60)]  # 50 Hz
    s.begin(T0, T0)
    feed(s, "a", stamps)
    samples = [x for x in run(s, T0 + NS) if x.time_ns <= T0 + NS]
    assert len(samples) == 31
    for x in samples:
        expected = max(t for t in stamps if t <= x.time_ns)
        assert x.complete and x.values["a"] == expected
        assert x.ages_s["a"] == pytest.approx((x.time_ns - expected) / NS)


def test_a_message_stamped_exactly_at_the_tick_is_used():
    s = make(fps=10)
    s.begin(T0, T0)
    feed(s, "a", [T0 - 50 * MS, T0, T0 + 100 * MS])
    samples = run(s, T0 + 100 * MS)
    assert [x.values["a"] for x in samples[:2]] == [T0, T0 + 100 * MS]


def test_the_grid_is_exact_integer_time_however_it_is_polled():
    s = make(fps=30, a=0.0)
    s.add("a", T0 - MS, 0, T0)
    s.begin(T0, T0)
    rng = random.Random(3)
    now, decided = T0, []
    while len(decided) < 3000:  # 100 s of irregular polling: jitter up to 3 periods
        now += rng.randint(1, 100) * MS
        decided += s.poll(now).samples
    for x in decided:
        assert x.time_ns == T0 + (x.index * NS) // 30
    assert [x.index for x in decided] == list(range(len(decided)))
    assert decided[-1].time_ns - T0 == pytest.approx(decided[-1].index / 30 * NS, abs=1)


def test_a_stalled_stream_makes_samples_stale_never_filled():
    s = make(fps=50, a=0.05)
    s.begin(T0, T0)
    feed(s, "a", [T0 + k * 10 * MS for k in range(31)])  # 100 Hz for 0.3 s, then nothing
    samples = run(s, T0 + 600 * MS)
    by_time = {(x.time_ns - T0) // MS: x for x in samples}
    assert by_time[300].complete and by_time[340].complete  # 40 ms old: still within 50 ms
    assert by_time[360].problems == {"a": STALE} and by_time[360].values == {}
    assert by_time[360].ages_s["a"] == pytest.approx(0.06)
    assert all(not x.complete for x in samples if x.time_ns > T0 + 350 * MS)


def test_missing_until_the_first_message_at_or_before_the_tick():
    s = make(fps=10, a=0.5, b=0.5)
    s.begin(T0, T0)
    feed(s, "a", [T0 - 10 * MS])
    feed(s, "b", [T0 + 150 * MS])  # only newer than the first ticks
    samples = run(s, T0 + 200 * MS)
    assert samples[0].problems == {"b": MISSING}
    assert samples[1].problems == {"b": MISSING}
    assert samples[2].complete and samples[2].values == {"a": T0 - 10 * MS, "b": T0 + 150 * MS}


def test_out_of_order_arrivals_within_the_delay_are_put_in_stamp_order():
    in_order, shuffled = make(fps=50, delay_s=0.1), make(fps=50, delay_s=0.1)
    stamps = [T0 - 20 * MS + k * 7 * MS for k in range(150)]
    rng = random.Random(0)
    for sampler in (in_order, shuffled):
        sampler.begin(T0, T0)
    feed(in_order, "a", stamps)
    # arrival order shuffled in windows of 8 messages (56 ms < the 100 ms delay)
    shuffled_stamps = []
    for i in range(0, len(stamps), 8):
        window = stamps[i:i + 8]
        rng.shuffle(window)
        shuffled_stamps += window
    for stamp in shuffled_stamps:
        shuffled.add("a", stamp, stamp, max(shuffled_stamps[: shuffled_stamps.index(stamp) + 1]))
    a = [x.values for x in run(in_order, T0 + NS)]
    b = [x.values for x in run(shuffled, T0 + NS)]
    assert a == b and len(a) > 40
    assert shuffled.counters["a"].late == 0


def test_a_message_arriving_after_its_tick_was_decided_is_counted_late():
    s = make(fps=10, delay_s=0.05, a=0.2)
    s.add("a", T0 - 10 * MS, "old", T0)
    s.begin(T0, T0)
    first = s.poll(T0 + 100 * MS).samples  # decides t = 0 ms and 50 ms? only 0: fps 10
    assert [x.values["a"] for x in first] == ["old"]
    s.add("a", T0, "late", T0 + 120 * MS)  # stamp 0 would have served tick 0
    assert s.counters["a"].late == 1
    s.add("a", T0 - 20 * MS, "older", T0 + 130 * MS)  # older than what was used: no effect
    assert s.counters["a"].late == 1
    second = s.poll(T0 + 150 * MS).samples
    assert [x.values["a"] for x in second] == ["late"]  # still the latest before tick 1


def test_a_loop_too_far_behind_counts_overrun_then_catches_up():
    s = make(fps=50, delay_s=0.05, max_lag_s=0.2, a=0.1)
    s.begin(T0, T0)
    feed(s, "a", [T0 + k * 5 * MS for k in range(400)])  # 200 Hz for 2 s
    assert len(s.poll(T0 + 100 * MS).samples) == 3  # t = 0, 20, 40 ms
    result = s.poll(T0 + 1_000 * MS)  # 0.9 s stall: samples older than 0.75 s are lost
    assert result.overrun == 35  # t = 60 .. 740 ms
    assert [x.time_ns - T0 for x in result.samples][0] == 760 * MS
    assert all(x.complete for x in result.samples)
    assert result.samples[-1].time_ns == T0 + 940 * MS
    assert result.samples[0].lag_s == pytest.approx(0.19)
    assert s.poll(T0 + 1_020 * MS).samples[0].lag_s == pytest.approx(0.01)


def simulate(sampler: Sampler, messages: list[tuple[str, int, object, int]], until_ns: int,
             poll_ns: int = 10 * MS) -> list:
    """Deliver (stream, stamp, value, arrival) messages and poll, in time order."""
    pending = sorted(messages, key=lambda m: m[3])
    out, now, i = [], T0, 0
    while now <= until_ns:
        while i < len(pending) and pending[i][3] <= now:
            stream, stamp, value, arrival = pending[i]
            sampler.add(stream, stamp, value, arrival)
            i += 1
        out += sampler.poll(now).samples
        now += poll_ns
    return out


def test_a_lagging_publisher_clock_shows_as_stale_and_late_and_a_leading_one_as_future():
    s = make(fps=50, delay_s=0.05, slow=0.05, fast=0.05)
    # Both publish at 100 Hz and arrive 1 ms after they are sent; "slow" stamps with a clock
    # 120 ms behind the recorder's, "fast" with one 100 ms ahead.
    messages = []
    for k in range(200):
        real = T0 + k * 10 * MS
        messages += [("slow", real - 120 * MS, k, real + MS),
                     ("fast", real + 100 * MS, k, real + MS)]
    s.begin(T0 + 300 * MS, T0)
    samples = simulate(s, messages, T0 + 1_500 * MS)
    assert len(samples) == 58  # t = 300, 320 .. 1450 ms (decided by 1500 ms)
    # at t + delay the newest "slow" stamp is ~70 ms old: every sample stale, never filled
    assert all(x.problems == {"slow": STALE} for x in samples)
    assert all(0.06 < x.ages_s["slow"] <= 0.08 for x in samples)
    assert s.counters["slow"].late > 50  # what it sent for each tick came after the decision
    # "fast" looks fresh (its data is really 100 ms older than its stamps): only the future
    # count and the negative latency tell
    assert all(x.ages_s["fast"] < 0.01 for x in samples)
    assert s.counters["fast"].received == 150  # sent by 1.5 s
    assert s.counters["fast"].future == 150 and s.counters["slow"].future == 0
    assert s.counters["slow"].latency_s.summary()["median"] == pytest.approx(0.121)
    assert s.counters["fast"].latency_s.summary()["median"] == pytest.approx(-0.099)


def test_a_sample_drifting_stream_rate_never_trips_a_sane_max_age():
    # a 30 Hz camera whose period is 1 % long against a 30 Hz dataset clock: the frame used
    # changes phase slowly, every sample finds one at most one period old
    s = make(fps=30, delay_s=0.1, cam=0.05)
    period = int(NS / 30 * 1.01)
    s.begin(T0, T0)
    feed(s, "cam", [T0 - period + k * period for k in range(320)], latency_ns=30 * MS)
    samples = [x for x in run(s, T0 + 10 * NS) if x.time_ns <= T0 + 10 * NS]
    assert len(samples) == 301 and all(x.complete for x in samples)
    assert max(x.ages_s["cam"] for x in samples) <= period / NS
    assert s.counters["cam"].late == 0


def test_buffers_stay_bounded_while_idle_and_recording():
    s = make(fps=30, delay_s=0.1, max_lag_s=0.4, a=0.1)
    feed(s, "a", [T0 + k * MS for k in range(5000)])  # 1 kHz for 5 s, no grid
    assert s.buffered()["a"] <= 501 + 1
    s.begin(T0 + 4_600 * MS, T0 + 5_000 * MS)
    feed(s, "a", [T0 + (5000 + k) * MS for k in range(5000)])
    s.poll(T0 + 10_000 * MS)
    assert s.buffered()["a"] <= 100 + 2  # the latest at the decided time and the 0.1 s after
    s.add("a", T0 + 3600 * NS, "an hour ahead", T0 + 10 * NS)
    for k in range(600):  # stamps never reach the far-future one: the count bound applies
        s.add("a", T0 + 10 * NS + k * MS, k, T0 + 10 * NS + k * MS)
    assert s.buffered()["a"] <= s.config.max_buffered


def test_a_grid_cannot_start_before_the_buffers_reach_and_force_skips_the_delay():
    s = make(fps=10, delay_s=0.2, max_lag_s=0.3, a=1.0)
    with pytest.raises(ValueError, match="older than the buffers reach"):
        s.begin(T0 - 600 * MS, T0)
    feed(s, "a", [T0 - 400 * MS])
    s.begin(T0 - 400 * MS, T0)
    assert len(s.poll(T0).samples) == 3  # -400, -300, -200 ms: the delay has passed for those
    forced = s.poll(T0, until_ns=T0 + 100 * MS, force=True)
    assert [x.time_ns - T0 for x in forced.samples] == [-100 * MS, 0, 100 * MS]
    assert s.next_time_ns() == T0 + 200 * MS
    s.stop()
    assert not s.running and s.poll(T0 + NS).samples == []


@pytest.mark.parametrize("kwargs, field", [
    ({"fps": 0}, "fps"), ({"delay_s": -1.0}, "delay_s"), ({"streams": ()}, "streams"),
    ({"max_buffered": 1}, "max_buffered"),
    ({"streams": (StreamConfig("a", 0.1), StreamConfig("a", 0.2))}, "duplicate"),
])
def test_config_errors_name_the_field(kwargs, field):
    base = {"fps": 30, "streams": (StreamConfig("a", 0.1),)}
    with pytest.raises(ValueError, match=field):
        SamplerConfig(**{**base, **kwargs})
    with pytest.raises(ValueError, match="max_age_s"):
        StreamConfig("a", -0.1)
