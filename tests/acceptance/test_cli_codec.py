"""``--codec`` / ``PERDURE_CODEC``: the CLI reads and writes encoded payloads, and shows what it cannot decode."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from tests.acceptance.operator_support import FAST, cli

from perdure import Client, OrchestrationContext, Registry, Runtime, SqliteProvider
from perdure._payloads import is_encoded
from perdure.codecs import FernetCodec

KEY = FernetCodec.generate_key()
CODEC = FernetCodec([KEY])

registry = Registry()


@registry.orchestration()
async def echo(ctx: OrchestrationContext, value: str) -> str:
    return value.upper()


async def _seed(db: Path) -> None:
    provider = await SqliteProvider.open(db)
    try:
        async with Runtime(provider, registry, replace(FAST, payload_codec=CODEC)):
            client = Client(provider, payload_codec=CODEC)
            await client.start_orchestration("secret", "echo", "card 4111")
            await client.wait_for_orchestration("secret", timeout=20)
    finally:
        await provider.close()


async def test_instances_show_decodes_with_the_codec_and_shows_encoded_sizes_without(tmp_path: Path) -> None:
    db = tmp_path / "perdure.db"
    await _seed(db)

    plain = await cli("instances", "show", "secret", "--json", db=db)
    assert plain.code == 0, plain.err
    shown = json.loads(plain.out)["instance"]
    assert shown["input"].startswith("<encoded ") and shown["input"].endswith(" bytes>")
    assert shown["output"].startswith("<encoded ")
    assert "4111" not in plain.out

    env = {"PERDURE_CODEC": "fernet", "PERDURE_FERNET_KEYS": f"{FernetCodec.generate_key()},{KEY}"}
    decoded = await cli("instances", "show", "secret", "--json", db=db, env=env)
    assert decoded.code == 0, decoded.err
    instance = json.loads(decoded.out)["instance"]
    assert (instance["input"], instance["output"]) == ("card 4111", "CARD 4111")

    wrong = {"PERDURE_FERNET_KEYS": FernetCodec.generate_key()}
    listed = await cli("instances", "list", "--json", "--codec", "fernet", db=db, env=wrong)
    assert listed.code == 0, listed.err
    assert json.loads(listed.out)["instances"][0]["output"].startswith("<encoded ")


async def test_start_encodes_the_input_it_is_given(tmp_path: Path) -> None:
    db = tmp_path / "perdure.db"
    await _seed(db)
    env = {"PERDURE_FERNET_KEYS": KEY}
    started = await cli("start", "echo", "--id", "new", "--input", '"hello"', "--codec", "fernet", db=db, env=env)
    assert started.code == 0, started.err
    provider = await SqliteProvider.open(db)
    try:
        state = await provider.get_state("new")
        assert state is not None and is_encoded(state.input)
        decoded = await Client(provider, payload_codec=CODEC).get_status("new")
        assert decoded is not None and decoded.input == "hello"
    finally:
        await provider.close()


async def test_a_bad_codec_is_a_usage_error(tmp_path: Path) -> None:
    db = tmp_path / "perdure.db"
    await _seed(db)
    missing_keys = await cli("instances", "list", "--codec", "fernet", db=db)
    assert missing_keys.code == 2
    assert "--codec fernet takes its keys from PERDURE_FERNET_KEYS" in missing_keys.err
    unknown = await cli("instances", "list", "--codec", "gzip", db=db)
    assert unknown.code == 2 and "expected zlib, fernet or MODULE:NAME" in unknown.err
    own = await cli("instances", "list", "--codec", "perdure.codecs:ZlibCodec", db=db)
    assert own.code == 0, own.err
    for command in ("dashboard", "worker", "replay"):
        assert "--codec" in (await cli(command, "--help")).out


def test_the_dashboard_shows_what_it_cannot_decode_as_encoded_sizes(tmp_path: Path) -> None:
    import asyncio

    import httpx
    from tests.acceptance.test_dashboard import start_dashboard, stop_process

    db = tmp_path / "perdure.db"
    asyncio.run(_seed(db))
    for extra in ((), ("--codec", "zlib")):  # no codec, and one that is not the store's
        process, url = start_dashboard(db, *extra)
        try:
            listing = httpx.get(f"{url}api/instances", timeout=10)
            one = httpx.get(f"{url}api/instance", params={"id": "secret"}, timeout=10)
        finally:
            stop_process(process)
        assert listing.status_code == one.status_code == 200
        assert "<encoded " in listing.text and "<encoded " in one.text
        assert "4111" not in listing.text + one.text
