"""Unit test configuration."""

import contextlib
import warnings

# When a property fails, Hypothesis imports libcst to suggest a patch; libcst uses the deprecated
# mypy_extensions.TypedDict, and `filterwarnings = error` would turn that into a pytest crash that
# hides the falsifying example. Import it once here, quietly.
with warnings.catch_warnings(), contextlib.suppress(ImportError):
    warnings.simplefilter("ignore", DeprecationWarning)
    import hypothesis.extra._patching  # noqa: F401
