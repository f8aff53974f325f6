"""amqtt's authentication hook, answered yes: who may connect was decided before amqtt saw the CONNECT."""

# broker/auth.py checks the login (or the anonymous role) where amqtt reads the CONNECT; amqtt still
# wants an auth plugin to say yes. Its own AnonymousAuthPlugin does the same, but its module imports
# pwdlib, argon2 and cffi for the password-file plugin next to it: ~0.6 MB resident for nothing.

from __future__ import annotations

from dataclasses import dataclass

from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session


class Admit(BaseAuthPlugin):  # type: ignore[misc]
    """Every session that reached amqtt is admitted, as anonymous (amqtt's allow_anonymous)."""

    @dataclass
    class Config:
        """No options; the dataclass is how amqtt tells a configured plugin (and skips its warning)."""

    async def authenticate(self, *, session: Session) -> bool:
        # As AnonymousAuthPlugin with allow_anonymous: amqtt keeps no offline queue for such a session.
        session.is_anonymous = True
        return True
