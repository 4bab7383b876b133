"""Tools for testing orchestrations and deploying changed code safely.

:class:`Replayer` replays stored histories against today's code, so a change that would break
running instances is found before it is deployed (``perdure replay`` does the same from the
command line). See docs/testing.md.
"""

from perdure.testing._replayer import Replayer, ReplayResult

__all__ = ["ReplayResult", "Replayer"]
