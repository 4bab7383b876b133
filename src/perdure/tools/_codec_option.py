"""``--codec`` (or ``PERDURE_CODEC``): the payload codec of the store, for the worker, the CLI and the dashboard.

``zlib``                a :class:`~perdure.codecs.ZlibCodec`;
``fernet``              a :class:`~perdure.codecs.FernetCodec` with the keys in ``PERDURE_FERNET_KEYS``
                        (comma-separated, newest first);
``module:attribute``    a codec of your own: a ``PayloadCodec``, or a callable without arguments
                        that returns one (the current directory is importable).

Without it, payloads stored encoded are shown as ``<encoded N bytes>``; so are those the codec
cannot decode (a missing key).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

from perdure._payloads import PayloadCodec
from perdure.tools._parser import Arg, arg

__all__ = ["CODEC", "parse_codec"]

FERNET_KEYS_ENV = "PERDURE_FERNET_KEYS"


def parse_codec(spec: str) -> PayloadCodec:
    """The codec ``spec`` names (an ``argparse`` type: a bad one is a usage error)."""
    from perdure.codecs import FernetCodec, ZlibCodec

    name = spec.strip()
    try:
        if name == "zlib":
            return ZlibCodec()
        if name == "fernet":
            keys = [k.strip() for k in os.environ.get(FERNET_KEYS_ENV, "").split(",") if k.strip()]
            if not keys:
                raise ValueError(
                    f"--codec fernet takes its keys from {FERNET_KEYS_ENV} (comma-separated, newest first)"
                )
            return FernetCodec(keys)
        return _imported(name)
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"--codec {name}: {exc}") from None


def _imported(target: str) -> PayloadCodec:
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError("expected zlib, fernet or MODULE:NAME")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    value: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        value = getattr(value, part)
    if not isinstance(value, PayloadCodec) and callable(value):
        value = value()
    if not isinstance(value, PayloadCodec):
        raise TypeError(f"{target} is a {type(value).__name__}, not a perdure.PayloadCodec")
    return value


CODEC: Arg = arg(
    "--codec",
    f"payload codec: zlib, fernet (keys in {FERNET_KEYS_ENV}) or MODULE:NAME",
    dest="payload_codec",
    type=parse_codec,
    metavar="CODEC",
)
