"""The notice mailed to an account's owner when it logs in from a client address and user
agent pair not seen for it before: how a person learns that someone else has their
password. Queued in the login's own transaction (the outbox sends it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.accounts.mails import AccountMails
from app.accounts.repository import UserRepository
from app.accounts.sessions import ClientInfo, LoginSessions
from app.mail.outbox import enqueue
from app.settings import MailSettings, TokenSettings

if TYPE_CHECKING:
    from uuid import UUID

    from sqlalchemy.ext.asyncio import AsyncSession


class LoginNotices:
    def __init__(self, *, mails: AccountMails, mail_settings: MailSettings, token_settings: TokenSettings) -> None:
        self._mails = mails
        self._mail_settings = mail_settings
        self._remember_days = token_settings.known_client_days

    async def after_login(
        self, db: AsyncSession, sessions: LoginSessions, users: UserRepository, user_id: UUID, client: ClientInfo
    ) -> bool:
        """Remember the client; queue the notice when it is new. True when one was queued."""
        if not await sessions.is_new_client(user_id, client, self._remember_days):
            return False
        user = await users.get_live(user_id)
        mail = self._mails.new_login(user.email, username=user.username, ip=client.ip, user_agent=client.user_agent)
        await enqueue(db, mail, self._mail_settings)
        return True
