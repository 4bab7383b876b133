"""The payload codecs that ship with perdure: compression and encryption at rest.

Give one to every runtime and client of a store::

    codec = FernetCodec([os.environ["PERDURE_KEY"]])
    Runtime(provider, registry, RuntimeOptions(payload_codec=codec))
    Client(provider, payload_codec=codec)

The CLI and dashboard take ``--codec`` (or ``PERDURE_CODEC``): ``zlib``, ``fernet`` (keys from
``PERDURE_FERNET_KEYS``) or ``module:attribute`` naming a codec of your own. See docs/payloads.md.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

from perdure._payloads import PayloadCodec

__all__ = ["FernetCodec", "PayloadCodec", "ZlibCodec"]

_ZLIB_MAGIC = b"z1"


class ZlibCodec(PayloadCodec):
    """Compresses payloads with zlib; payloads shorter than ``min_size`` bytes are kept as they are.

    Args:
        level: The zlib level, 1 (fastest) to 9 (smallest).
        min_size: Payloads shorter than this are not worth compressing.
    """

    def __init__(self, level: int = 6, *, min_size: int = 0) -> None:
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 9:
            raise ValueError(f"level must be an int from 1 to 9, got {level!r}")
        self.level = level
        self.min_size = min_size

    def encode(self, data: bytes) -> bytes:
        """``data`` compressed, behind a two-byte marker (or marked as kept, when short)."""
        if len(data) < self.min_size:
            return b"z0" + data
        return _ZLIB_MAGIC + zlib.compress(data, self.level)

    def decode(self, data: bytes) -> bytes:
        """The inverse of :meth:`encode`; raises ``ValueError`` for data it did not make."""
        if data[:2] == b"z0":
            return data[2:]
        if data[:2] != _ZLIB_MAGIC:
            raise ValueError("not a payload made by ZlibCodec")
        try:
            return zlib.decompress(data[2:])
        except zlib.error as exc:
            raise ValueError(f"corrupted zlib payload: {exc}") from None


class FernetCodec(PayloadCodec):
    """Encrypts payloads with Fernet (AES-128-CBC with an HMAC-SHA256, from ``cryptography``).

    Key rotation: payloads are encrypted with the first key and decrypted with whichever of the
    keys made them. To rotate, put the new key first and keep the old ones while histories
    encrypted with them may still be read.

    Args:
        keys: URL-safe base64 Fernet keys (``FernetCodec.generate_key()`` makes one), newest first.

    Raises:
        ImportError: if ``cryptography`` is not installed (``pip install 'perdure[crypto]'``).
        ValueError: if there is no key or a key is malformed.
    """

    def __init__(self, keys: Sequence[str | bytes]) -> None:
        fernet = _fernet_module()
        if isinstance(keys, str | bytes):
            raise TypeError("keys must be a list of keys, newest first, not one key")
        if not keys:
            raise ValueError("FernetCodec needs at least one key")
        try:
            self._fernet: Any = fernet.MultiFernet([fernet.Fernet(key) for key in keys])
        except (ValueError, TypeError) as exc:
            raise ValueError(f"a Fernet key is malformed: {exc}") from None
        self._invalid = fernet.InvalidToken

    @staticmethod
    def generate_key() -> str:
        """A new random key, as text to keep in a secret store."""
        key: bytes = _fernet_module().Fernet.generate_key()
        return key.decode("ascii")

    def encode(self, data: bytes) -> bytes:
        """``data`` encrypted with the first key."""
        token: bytes = self._fernet.encrypt(data)
        return token

    def decode(self, data: bytes) -> bytes:
        """``data`` decrypted with whichever key encrypted it; ``ValueError`` if none did."""
        try:
            plain: bytes = self._fernet.decrypt(data)
        except self._invalid:
            raise ValueError("no key of this FernetCodec decrypts the payload (wrong key, or altered data)") from None
        return plain


def _fernet_module() -> Any:
    try:
        from cryptography import fernet
    except ImportError:
        raise ImportError("FernetCodec needs cryptography: pip install 'perdure[crypto]'") from None
    return fernet
