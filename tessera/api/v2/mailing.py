"""Mail from endpoints: messages built inside the transaction are sent by a background task,
which Starlette runs after the response, so after the unit of work has committed."""

from fastapi import BackgroundTasks, Request

from tessera.api.deps import runtime
from tessera.domains import mail
from tessera.domains.identity.passwords import LinkPolicy
from tessera.storage.repositories import Repositories


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
