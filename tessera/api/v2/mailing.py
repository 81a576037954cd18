"""Mail from endpoints: messages built inside the transaction are sent by a background task,
which Starlette runs after the response, so after the unit of work has committed."""

import contextvars
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial

from fastapi import BackgroundTasks, Request

from tessera.api.deps import runtime
from tessera.domains import mail
from tessera.domains.actor import Actor
from tessera.domains.audit.context import SUCCESS_STATUS
from tessera.domains.identity import passwords
from tessera.domains.identity.passwords import LinkPolicy
from tessera.runtime import Runtime
from tessera.storage.repositories import Repositories

log = logging.getLogger("tessera.auth")


def link_policy(request: Request) -> LinkPolicy:
    settings = runtime(request).settings
    return LinkPolicy(
        settings.https_base, settings.reset_token_minutes, settings.invite_token_hours
    )


def mail_config(request: Request, repos: Repositories) -> mail.MailConfig:
    rt = runtime(request)
    return mail.load_config(repos, rt.settings, rt.keys)


def send_after_commit(
    background: BackgroundTasks, config: mail.MailConfig, messages: list[mail.Message]
) -> None:
    if messages:
        background.add_task(mail.deliver, config, messages)


def notify_after_commit(
    request: Request,
    repos: Repositories,
    background: BackgroundTasks,
    messages: list[mail.Message],
) -> None:
    """Notices (not links anyone waits for): sent when mail is set up, else left unsent."""
    if messages:
        config = mail_config(request, repos)
        if config.configured:
            send_after_commit(background, config, messages)


# Reset requests' work runs on this thread, detached from the request. As a Starlette
# background task (run by the request's own task after the answer) it still showed: the next
# request on the same connection came ~2 ms later after an existing address than after an
# unknown one (median of 30); detached, the two are within noise of each other.
_RESETS = ThreadPoolExecutor(1, thread_name_prefix="tessera-reset")
# Queued reset requests a process keeps at most: each may wait for an SMTP server's timeout,
# and a flood of them (from many addresses, past the per-IP limit) must not grow without end.
MAX_QUEUED_RESETS = 200
_queued = threading.BoundedSemaphore(MAX_QUEUED_RESETS)


def request_reset_links(rt: Runtime, email: str, policy: LinkPolicy, who: Actor) -> None:
    """Queue `send_reset_links` (with this request's context: its id goes in the audit row).
    With the queue full the request is dropped and logged; its answer stays the same."""
    if not _queued.acquire(blocking=False):
        log.warning("password reset request dropped: %d are queued already", MAX_QUEUED_RESETS)
        return
    work = partial(contextvars.copy_context().run, send_reset_links, rt, email, policy, who)
    _RESETS.submit(work).add_done_callback(_finished)


def _finished(done: "Future[None]") -> None:
    _queued.release()
    failure = done.exception()
    if failure is not None:  # nobody waits for this work: its failure is only logged
        log.error("password reset request failed", exc_info=failure)


def send_reset_links(rt: Runtime, email: str, policy: LinkPolicy, who: Actor) -> None:
    """A password reset request's work, after its answer has gone out: looking the address
    up, storing a link for each account that has it (audited) and mailing them. In the
    request, the writes and the commit an existing address causes made its answer some ten
    times slower than an unknown address's (~20 ms against ~2 ms), which told anyone which
    addresses have accounts, the same answer notwithstanding. Its own unit of work."""
    SUCCESS_STATUS.set(200)  # what the request answered, for the audit row
    with rt.sessions() as session:
        repos = Repositories(session, who.org_id)
        config = mail.load_config(repos, rt.settings, rt.keys)
        if not config.configured:
            log.warning("password reset requested, but email is not configured")
            return
        messages = passwords.request_reset(repos, email, policy, rt.clock(), who)
        session.commit()
    mail.deliver(config, messages)
