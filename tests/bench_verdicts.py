"""The verdicts of `benches/serve_under_traffic.py` on runs whose outcome is known: a server
that keeps up, one that falls behind, one that fails requests, too few requests, and the
search for the highest sustained rate against servers of known capacity.

Run by `tests/bench_verdicts.rs` with the project's Python environment (the bench needs
pyarrow); standard `unittest` otherwise.
"""

import contextlib
import io
import os
import random
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benches"))
import serve_under_traffic as bench  # noqa: E402


def open_loop_run(rate, seconds, service, capacity=None, failures=0, seed=7):
    """Requests of a seeded Poisson run at `rate` a second for `seconds`: each takes
    `service` seconds; with `capacity`, the server completes at most that many a second
    (a queue: each waits for the one before it), else every request runs at once. The
    first `failures` requests fail."""
    rng = random.Random(seed)
    requests, t, free_at = [], 0.0, 0.0
    while t < seconds:
        t += rng.expovariate(rate)
        if capacity is None:
            end = t + service
        else:
            free_at = max(free_at, t) + 1.0 / capacity
            end = max(free_at, t + service)
        requests.append({"warmup": False, "intended_start_s": t, "end_s": end,
                         "outcome": "failed" if len(requests) < failures else "ok"})
    return requests


def quietly(function, *args):
    with contextlib.redirect_stderr(io.StringIO()):
        return function(*args)


class Sustained(unittest.TestCase):
    def test_a_server_that_keeps_up_is_sustained(self):
        verdict = quietly(bench.sustained, open_loop_run(1.0, 135, service=5.0))
        self.assertTrue(verdict.ok)
        self.assertAlmostEqual(verdict.completed, 1.0, delta=0.25)

    def test_a_server_that_falls_behind_is_not_and_reports_its_throughput(self):
        verdict = quietly(bench.sustained, open_loop_run(1.0, 135, service=2.0, capacity=0.7))
        self.assertFalse(verdict.ok)
        self.assertAlmostEqual(verdict.completed, 0.7, delta=0.05)

    def test_a_tenth_short_of_the_arrivals_is_not_sustained(self):
        verdict = quietly(bench.sustained, open_loop_run(1.0, 135, service=2.0, capacity=0.88))
        self.assertFalse(verdict.ok)

    def test_more_than_one_percent_failed_is_not_sustained(self):
        verdict = quietly(bench.sustained, open_loop_run(1.0, 135, service=5.0, failures=3))
        self.assertFalse(verdict.ok)

    def test_too_few_requests_are_not_judged_sustained(self):
        requests = open_loop_run(0.1, 20, service=1.0)
        self.assertLess(len(requests), 10)
        self.assertFalse(quietly(bench.sustained, requests).ok)


class HighestSustained(unittest.TestCase):
    def search(self, capacity_rps, llama_capacity=0.35):
        """The search against a server that sustains rates up to `capacity_rps` and
        completes at most that many a second; returns the rate found and the rates tried."""
        tried = []

        def step_at(url, work, capacity, factor, seconds, what):
            rate = capacity * factor
            tried.append(rate)
            return bench.Verdict(rate <= capacity_rps, min(rate, capacity_rps), rate)

        real, bench.step_at = bench.step_at, step_at
        try:
            return bench.highest_sustained("url", "work", llama_capacity, 135), tried
        finally:
            bench.step_at = real

    def test_the_rate_found_lies_under_the_capacity_within_the_search_step(self):
        found, tried = self.search(0.6)
        self.assertLessEqual(found, 0.6)
        self.assertGreaterEqual(found, bench.BELOW * 0.6 - 0.005)
        self.assertEqual(len(tried), 2, tried)

    def test_a_server_that_keeps_up_at_the_overload_rate_gets_that_rate(self):
        found, tried = self.search(10.0)
        self.assertAlmostEqual(found, bench.SATURATE * 0.35)
        self.assertEqual(len(tried), 1)

    def test_a_server_that_sustains_nothing_gets_zero_after_the_last_try(self):
        found, tried = self.search(0.0)
        self.assertEqual(found, 0.0)
        self.assertLessEqual(len(tried), 1 + bench.CONFIRM_TRIES)


if __name__ == "__main__":
    unittest.main()
