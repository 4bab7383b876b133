"""Tools for testing orchestrations and deploying changed code safely.

:class:`TestEnvironment` runs orchestrations in a fresh store, on a clock that skips ahead whenever
every instance waits, so a test of a 30-day workflow takes a moment. :class:`Replayer` replays
stored histories against today's code, so a change that would break running instances is found
before it is deployed (``perdure replay`` does the same from the command line). See docs/testing.md.
"""

from perdure.testing._environment import TestEnvironment
from perdure.testing._replayer import Replayer, ReplayResult

__all__ = ["ReplayResult", "Replayer", "TestEnvironment"]
