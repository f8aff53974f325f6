"""Who may pair: the agent's policy (accept every audio source, or ask and wait for an answer)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from node.framework.errors import CommandError
from node.sources.bluetooth.models import BluetoothConfig, PendingPairing

if TYPE_CHECKING:
    from node.adapters.bluez import AgentKind, Bluez


def _now_ms() -> int:
    return int(time.time() * 1000)


class Pairing:
    """The `AgentPolicy` BlueZ's agent asks; with `pairing = "ask"`, one request waits at a time.

    `publish(pending)` puts the waiting request (or None) into the source's state; the answer comes
    from `answer()` (the `{"accept": bool}` command), BlueZ's Cancel, or the timeout, which refuses.
    """

    def __init__(
        self,
        config: BluetoothConfig,
        bluez: Callable[[], Bluez | None],
        publish: Callable[[PendingPairing | None], Awaitable[None]],
        log: logging.Logger,
    ) -> None:
        self.config = config
        self._bluez = bluez
        self._publish = publish
        self.log = log
        self._waiting: asyncio.Future[bool] | None = None
        self.pending: PendingPairing | None = None

    async def authorize(self, device: str, kind: AgentKind, passkey: int | None, uuid: str | None) -> bool:
        from node.adapters.bluez import AUDIO_UUIDS  # noqa: PLC0415 - BlueZ's agent asks, so it is loaded

        bluez = self._bluez()
        known = bluez.device(device) if bluez is not None else None
        name = known.name if known is not None else device.rsplit("/", 1)[-1]
        if kind == "service":
            # A profile connection of a device BlueZ does not trust yet: audio only, never anything else.
            if uuid not in AUDIO_UUIDS:
                self.log.info("bluetooth: %s may not use service %s", name, uuid)
                return False
            if known is not None and known.paired:
                return True
        if known is not None and not known.audio_source:
            self.log.info("bluetooth: %s is no audio source (UUIDs %s): refused", name, sorted(known.uuids))
            return False
        if self.config.pairing == "accept":
            self.log.info("bluetooth: %s pairs (pairing = accept)", name)
            return True
        return await self._ask(known.address if known is not None else "", name, passkey)

    async def _ask(self, address: str, name: str, passkey: int | None) -> bool:
        if self._waiting is not None and not self._waiting.done():
            self.log.info("bluetooth: %s refused: another pairing request is waiting", name)
            return False
        waiting: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting = waiting
        timeout = self.config.pairing_timeout_s
        self.pending = PendingPairing(
            address=address,
            name=name,
            passkey=f"{passkey:06d}" if passkey is not None else None,
            expires_at=_now_ms() + timeout * 1000,
        )
        await self._publish(self.pending)
        try:
            accepted = await asyncio.wait_for(asyncio.shield(waiting), timeout)
        except TimeoutError:
            self.log.info("bluetooth: pairing of %s not answered in %d s: refused", name, timeout)
            accepted = False
        finally:
            self.pending = None
            self._waiting = None
            with contextlib.suppress(Exception):
                await self._publish(None)
        return accepted

    def pin_code(self, device: str) -> str:
        return self.config.pin_code

    def cancelled(self) -> None:
        """BlueZ gave the request up (the phone cancelled it)."""
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_result(False)

    def answer(self, accept: bool) -> None:
        if self._waiting is None or self._waiting.done():
            raise CommandError("no_pending_pairing", "no pairing request is waiting for an answer")
        self._waiting.set_result(accept)

    def close(self) -> None:
        self.cancelled()
