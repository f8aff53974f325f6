"""Who may connect to the embedded broker, and what each client's role lets it publish and subscribe."""

# Roles (README, Security): `node` may do everything (another node process: a satellite, `--only`;
# the node's own subsystems reach the broker in-process and are never checked); `control` reads
# everything and publishes commands (`.../set`, `.../get`, request topics) and anything outside
# `milo/`, never retained under `milo/`; `read` publishes nothing. A request's `reply_to` must lie
# outside `milo/` or under `milo/<id>/reply/<its user or client id>/`, and replies there reach only
# that client. The check runs where amqtt reads the CONNECT, before amqtt touches any existing
# session of that client id (a refused client never kicks out or rewrites a connected one).
# A connected client keeps its grant only while the policy would still give it: when the users
# file changes, the node has every connected client reviewed (`review_sessions`), and a client whose
# user is gone, whose password or role changed, or that may no longer connect anonymously (the
# first user was added) is disconnected, without its will, as mosquitto's dynamic security plugin
# kicks such clients. The same review runs once more as each client's message loop starts, so a
# login checked against the old file but registered after the review is caught too.

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from amqtt.errors import MQTTError
from amqtt.mqtt.connack import BAD_USERNAME_PASSWORD, NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler

logger = logging.getLogger(__name__)

Anonymous = Literal["loopback", "all", "none"]


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


@dataclass(frozen=True)
class Login:
    """A user's role, and the credential it was checked against (changes with every new password)."""

    role: str
    credential: str = field(default="", repr=False)


Verifier = Callable[[str, str], Awaitable[Login | None]]  # (user, password) -> login, None: wrong
Lookup = Callable[[str], Login | str]  # user -> as the users file says now, else why it is gone
REPORTS_PER_SECOND = 5  # refusals reported on `<base>/error` per client; beyond that, only counted
MAX_INSPECTED = 64 * 1024  # a command payload read for its reply_to; a bigger one is refused


@dataclass(frozen=True)
class Grant:
    """What one connection may do; kept on its session."""

    role: str
    owner: str  # the user name, else the client id: the name of its reply namespace
    user: str | None = None
    credential: str = field(default="", repr=False)  # what the user's password was checked against
    local: bool = False  # connected from this host (what an anonymous client's role depends on)
    # Acts as a node under other nodes' bases (`milo/<another id>/`), never under this node's own:
    # anonymous clients while no user exists, so a satellite (`milo run --only volume` under its own
    # id on this broker) keeps working on a fresh install.
    other_bases: bool = False


@dataclass(frozen=True)
class Refusal:
    """A PUBLISH, will or SUBSCRIBE refused, for the node to report on `<base>/error`."""

    client_id: str
    user: str | None
    role: str
    topic: str
    payload: bytes
    reason: str


@dataclass
class AuthPolicy:
    """The embedded broker's admission and topic rules, filled in by the node."""

    verify: Verifier
    has_users: Callable[[], bool]
    lookup: Lookup | None = None  # None: a connected user's grant is never reviewed
    request_paths: frozenset[str] = frozenset()
    own_base: str = ""  # "milo/<node id>/": what only a node may write to, whatever else is allowed
    anonymous: Anonymous = "loopback"
    anonymous_lan_role: str = "read"
    loopback_role: str = "control"
    on_refused: Callable[[Refusal], None] | None = None
    # What counts as this host (tests stand a LAN client in on 127.0.0.1 through it).
    is_local: Callable[[str | None], bool] = is_loopback
    _reports: dict[str, tuple[int, int]] = field(default_factory=dict)  # client -> (second, count)

    # CONNECT -----------------------------------------------------------------------------------
    def anonymous_role(self, address: str | None) -> str | None:
        """The role an anonymous client from `address` gets; None: it must log in."""
        return self._anonymous_role(self.is_local(address))

    def _anonymous_role(self, local: bool) -> str | None:
        if self.anonymous == "none":
            return None
        if local:
            return self.loopback_role  # the kiosk and scripts on the node's own host
        if self.anonymous == "all":
            return self.anonymous_lan_role
        # "loopback": a fresh install (no user yet) still works from a phone on the LAN.
        return None if self.has_users() else "control"

    def _other_bases(self, role: str) -> bool:
        return role == "control" and bool(self.own_base) and not self.has_users()

    async def admit(self, session: Any, address: str | None) -> Grant | int:
        """A Grant, or the CONNACK return code refusing the client (4 bad credentials, 5 not allowed)."""
        client_id = session.client_id or ""
        local = self.is_local(address)
        if session.username:
            login = await self.verify(session.username, session.password or "")
            if login is None:
                logger.info("%s: refused, bad user name or password for %r", client_id, session.username)
                return int(BAD_USERNAME_PASSWORD)
            grant = Grant(login.role, session.username, session.username, login.credential, local)
        else:
            anonymous = self._anonymous_role(local)
            if anonymous is None:
                logger.info("%s from %s: refused, anonymous clients must log in here", client_id, address)
                return int(NOT_AUTHORIZED)
            grant = Grant(anonymous, client_id, local=local, other_bases=self._other_bases(anonymous))
        if session.will_flag and session.will_topic:
            message = session.will_message or b""
            why = self.may_publish(grant, client_id, session.will_topic, bool(session.will_retain), message)
            if why is not None:
                logger.info("%s: refused, its will on %s: %s", client_id, session.will_topic, why)
                self.refused(grant, client_id, session.will_topic, bytes(message), f"will: {why}")
                return int(NOT_AUTHORIZED)
        return grant

    def review(self, grant: Grant) -> Grant | str:
        """For a connected client: the grant it keeps (the same, or its `other_bases` brought up to
        date), or why it must connect again (its user removed, its password or role changed)."""
        if grant.user is not None:
            return self._review_user(grant, grant.user)
        role = self._anonymous_role(grant.local)
        if role is None:
            return "a user exists now: clients from the network must log in"
        if role != grant.role:
            return f"anonymous clients get the role {role} now"
        other_bases = self._other_bases(role)
        return grant if other_bases == grant.other_bases else replace(grant, other_bases=other_bases)

    def _review_user(self, grant: Grant, user: str) -> Grant | str:
        if self.lookup is None:
            return grant
        now = self.lookup(user)
        if isinstance(now, str):
            return now
        if now.role != grant.role:
            # Disconnected rather than changed in place: its subscriptions were granted to the
            # old role, and a new CONNECT checks everything again.
            return f"its role changed from {grant.role} to {now.role}"
        if now.credential != grant.credential:
            return "its password changed"
        return grant

    # PUBLISH -----------------------------------------------------------------------------------
    def may_publish(  # noqa: PLR0911 - one return per rule
        self, grant: Grant, client_id: str, topic: str, retain: bool, payload: bytes
    ) -> str | None:
        """None when allowed, else why not."""
        if grant.role == "node":
            return None
        if grant.role != "control":
            return f"role {grant.role} may not publish"
        if not topic.startswith("milo/"):
            return None
        if grant.other_bases and not topic.startswith(self.own_base):
            return None
        levels = topic.split("/")
        rest = levels[2:]
        command = bool(rest) and (
            (len(rest) >= 2 and rest[-1] in ("set", "get")) or "/".join(rest) in self.request_paths
        )
        if not command:
            return "only the node publishes status, state and error topics"
        if retain and payload:
            # An empty one only clears a command someone retained on another broker before.
            return "only the node publishes retained messages under milo/"
        if b"reply_to" in payload:
            return self._check_reply_to(grant, client_id, payload)
        return None

    def _check_reply_to(self, grant: Grant, client_id: str, payload: bytes) -> str | None:
        if len(payload) > MAX_INSPECTED:
            return f"a request over {MAX_INSPECTED} bytes"
        try:
            value = json.loads(payload)
        except (ValueError, RecursionError):
            return None  # not JSON: the node answers invalid_payload itself
        reply_to = value.get("reply_to") if isinstance(value, dict) else None
        if not isinstance(reply_to, str) or not reply_to.startswith("milo/"):
            return None
        levels = reply_to.split("/")
        if len(levels) >= 4 and levels[2] == "reply" and levels[3] in (grant.owner, client_id):
            return None
        return f"reply_to under milo/ must be milo/<id>/reply/{grant.owner}/..."

    # SUBSCRIBE, delivery -----------------------------------------------------------------------
    @staticmethod
    def may_subscribe(grant: Grant, client_id: str, topic_filter: str) -> str | None:
        if grant.role == "node":
            return None
        levels = topic_filter.split("/")
        if (
            len(levels) >= 4
            and levels[0] == "milo"
            and levels[2] == "reply"
            and levels[3] not in ("+", "#", grant.owner, client_id)
        ):
            return "another client's replies"
        return None

    @staticmethod
    def may_receive(grant: Grant | None, client_id: str, topic: str) -> bool:
        """Replies under `milo/<id>/reply/<owner>/` reach their owner only (and nodes)."""
        if grant is None or grant.role == "node":
            return True
        levels = topic.split("/", 4)
        return len(levels) < 4 or levels[3] in (grant.owner, client_id)

    # Reports -----------------------------------------------------------------------------------
    def refused(self, grant: Grant, client_id: str, topic: str, payload: bytes, reason: str) -> None:
        if self.on_refused is None:
            return
        second = int(time.monotonic())
        last, count = self._reports.get(client_id, (second, 0))
        count = count + 1 if last == second else 1
        if len(self._reports) > 1024:
            self._reports.clear()
        self._reports[client_id] = (second, count)
        if count > REPORTS_PER_SECOND:
            return
        self.on_refused(Refusal(client_id, grant.user, grant.role, topic, payload, reason))


def grant_of(session: Any) -> Grant | None:
    grant: Grant | None = getattr(session, "milo_grant", None)
    return grant


def policy_of(plugins_manager: Any) -> AuthPolicy | None:
    policy: AuthPolicy | None = getattr(plugins_manager, "milo_policy", None)
    return policy


# Patches ----------------------------------------------------------------------------------------
_original: dict[str, Any] = {}


async def _init_from_connect(
    cls: Any, reader: Any, writer: Any, plugins_manager: Any, loop: Any = None
) -> tuple[BrokerProtocolHandler, Any]:
    handler, session = await _original["init_from_connect"](cls, reader, writer, plugins_manager, loop)
    policy = policy_of(plugins_manager)
    if policy is None:
        return handler, session
    peer = writer.get_peer_info()
    try:
        decision: Grant | int = await policy.admit(session, peer[0] if peer else None)
    except Exception:
        # amqtt would not release the connection's slot for an exception it does not expect.
        logger.exception("%s: admission failed; refused", session.client_id)
        decision = int(NOT_AUTHORIZED)
    if isinstance(decision, int):
        # amqtt sends 5 for every refusal, and only after a same-id client was already taken over.
        await ConnackPacket.build(0, decision).to_stream(writer)
        await writer.close()
        raise MQTTError(f"connection refused ({decision})")
    handler.milo_grant = decision
    session.milo_grant = decision
    return handler, session


async def _handle_client_session(self: Any, reader: Any, writer: Any, client_session: Any, handler: Any,
                                 *args: Any) -> None:  # fmt: skip
    # A persistent session found again is amqtt's own object: it takes this connection's grant.
    grant = getattr(handler, "milo_grant", None)
    if grant is not None:
        client_session.milo_grant = grant
    await _original["_handle_client_session"](self, reader, writer, client_session, handler, *args)


def _who(session: Any, grant: Grant) -> str:
    if grant.user is not None:
        return f"{session.client_id} (user {grant.user!r})"
    return f"{session.client_id} (anonymous, {'this host' if grant.local else 'network'})"


async def _disconnect(session: Any, handler: Any, grant: Grant, reason: str) -> None:
    logger.info("%s disconnected: %s", _who(session, grant), reason)
    handler.milo_revoked = reason  # a handler not started yet is closed as its loop starts
    await _close(session, handler)


async def _close(session: Any, handler: Any) -> None:
    # No will: a client cut off for its rights publishes nothing more in their name.
    session.will_flag = False
    await handler.handle_connection_closed()


async def review_sessions(broker: Any) -> int:
    """Review every connected client's grant (the users file changed); returns how many were cut off."""
    policy = policy_of(broker.plugins_manager)
    if policy is None:
        return 0
    closed = 0
    for session, handler in list(broker._sessions.values()):
        grant = grant_of(session)
        if grant is None or not session.transitions.is_connected():
            continue
        if getattr(handler, "milo_revoked", None) is not None:
            continue
        verdict = policy.review(grant)
        if isinstance(verdict, str):
            await _disconnect(session, handler, grant, verdict)
            closed += 1
        elif verdict is not grant:
            session.milo_grant = handler.milo_grant = verdict
            allowed = "may" if verdict.other_bases else "may no longer"
            logger.info("%s %s act as a node under other nodes' bases", _who(session, verdict), allowed)
    return closed


async def _client_message_loop(self: Any, client_session: Any, handler: Any) -> None:
    # Registered and started now: a review from here on sees this client; one that ran since its
    # CONNECT was checked may have missed it, so it is checked once more (a stat of the users file).
    policy = policy_of(self.plugins_manager)
    grant = grant_of(client_session)
    if policy is not None and grant is not None:
        if getattr(handler, "milo_revoked", None) is not None:
            await _close(client_session, handler)  # reviewed (and logged) before it started
        elif isinstance(verdict := policy.review(grant), str):
            await _disconnect(client_session, handler, grant, verdict)
        elif verdict is not grant:
            client_session.milo_grant = handler.milo_grant = verdict
    await _original["_client_message_loop"](self, client_session, handler)


async def _add_subscription(self: Any, subscription: tuple[str, int], session: Any) -> int:
    policy = policy_of(self.plugins_manager)
    grant = grant_of(session)
    if policy is not None and grant is not None:
        why = policy.may_subscribe(grant, session.client_id or "", subscription[0])
        if why is not None:
            logger.info("%s may not subscribe to %s: %s", session.client_id, subscription[0], why)
            return 0x80
    result: int = await _original["add_subscription"](self, subscription, session)
    return result


def apply() -> None:
    """Install the admission and subscription checks (a broker without a policy checks nothing)."""
    if _original:
        return
    from amqtt.broker import Broker  # noqa: PLC0415 - beside the handler's import above

    _original["init_from_connect"] = BrokerProtocolHandler.init_from_connect.__func__
    BrokerProtocolHandler.init_from_connect = classmethod(_init_from_connect)
    _original["_handle_client_session"] = Broker._handle_client_session
    Broker._handle_client_session = _handle_client_session
    _original["add_subscription"] = Broker.add_subscription
    Broker.add_subscription = _add_subscription
    _original["_client_message_loop"] = Broker._client_message_loop
    Broker._client_message_loop = _client_message_loop


__all__ = [
    "AuthPolicy",
    "Grant",
    "Login",
    "Lookup",
    "Refusal",
    "apply",
    "grant_of",
    "is_loopback",
    "policy_of",
    "review_sessions",
]
