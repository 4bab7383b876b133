"""The PostgreSQL provider: scale out over worker processes and hosts sharing one database.

Needs the ``postgres`` extra (``pip install perdure[postgres]``: psycopg 3 and its pool).
"""

from perdure.providers.postgres._provider import PostgresProvider

__all__ = ["PostgresProvider"]
