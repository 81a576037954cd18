"""System → Security: /api/v2/system/security/... (key encryption and rate limits)."""

from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError

from tessera.api.deps import UnitOfWork, now, require_system, runtime
from tessera.api.ratelimit import SETTING, Limiter, policy_document
from tessera.api.routing import PrefixRouter
from tessera.api.v2.envelope import ok
from tessera.api.v2.schemas import NO_BOOL
from tessera.core.errors import InvalidInput
from tessera.domains.actor import Actor
from tessera.domains.audit import record
from tessera.domains.security import rotation
from tessera.domains.security.kek import kek_file
from tessera.domains.security.service import SecurityService, WrongMasterPassword
from tessera.runtime import Runtime
from tessera.storage.repositories.audit import AuditRepository
from tessera.storage.repositories.security import SecurityRepository

router = PrefixRouter(prefix="/system/security", tags=["System: Security"])
Admin = Annotated[Actor, Depends(require_system("admin:system"))]
PerMinute = Annotated[int, Field(ge=1, le=1_000_000), NO_BOOL]


class MasterPassword(BaseModel):
    model_config = ConfigDict(extra="forbid")
    master_password: str = Field(min_length=1, max_length=1024)


class RotateSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid")
    new_key: str | None = Field(None, max_length=200)


class RateLimitUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool | None = None
    requests_per_minute: PerMinute | None = None
    auth_requests_per_minute: PerMinute | None = None
    export_requests_per_minute: PerMinute | None = None
    protocol_requests_per_minute: Annotated[int, Field(ge=0, le=1_000_000), NO_BOOL] | None = None


def _service(request: Request, session: UnitOfWork, actor: Actor) -> SecurityService:
    rt = runtime(request)
    return SecurityService(session, rt.keys, kek_file(rt.settings), rt.settings, actor)


@router.get("/encryption-status")
def encryption_status(request: Request, session: UnitOfWork, actor: Admin) -> JSONResponse:
    return ok(_service(request, session, actor).encryption_status())


@router.post("/enable-encryption")
def enable_encryption(
    request: Request, body: MasterPassword, session: UnitOfWork, actor: Admin
) -> JSONResponse:
    data = _service(request, session, actor).protect(body.master_password)
    return ok(data, "Key-encryption key protected with the master password")


@router.post("/disable-encryption")
def disable_encryption(
    request: Request, body: MasterPassword, session: UnitOfWork, actor: Admin
) -> JSONResponse:
    try:
        data = _service(request, session, actor).unprotect(body.master_password)
    except WrongMasterPassword:
        session.commit()  # the failed attempt stays in the audit log
        raise
    return ok(data, "Master password removed; keys remain encrypted at rest")


@router.get("/generate-key")
def generate_key(request: Request, session: UnitOfWork, actor: Admin) -> JSONResponse:
    return ok(_service(request, session, actor).generate_key())


@router.post("/rotate-secrets", status_code=202)
def rotate_secrets(
    request: Request, session: UnitOfWork, actor: Admin, body: RotateSecrets | None = None
) -> JSONResponse:
    rt = runtime(request)
    row = rotation.start(
        session, rt.keys, kek_file(rt.settings), actor, body.new_key if body else None, now(request)
    )
    session.commit()  # the job must see the row
    rt.jobs.kick(rotation.JOB)
    data = {"rotation_id": row.id, "status": row.status, "new_kek_fingerprint": row.new_fingerprint}
    return ok(data, "Key rotation started; see secrets-status for progress", status=202)


@router.get("/secrets-status")
def secrets_status(request: Request, session: UnitOfWork, actor: Admin) -> JSONResponse:
    return ok(_service(request, session, actor).secrets_status(now(request)))


@router.get("/anomalies")
def anomalies(
    request: Request,
    session: UnitOfWork,
    actor: Admin,
    hours: Annotated[int, Query(ge=1, le=24 * 90)] = 24,
) -> JSONResponse:
    data = _service(request, session, actor).anomalies(now(request), hours)
    limiter = _limiter(request)
    data["rate_limited"] = {
        key.rpartition(":")[0]: value
        for key, value in limiter.counts.items()
        if key.endswith(":blocked")
    }
    return ok(data)


def _limiter(request: Request) -> Limiter:
    limiter: Limiter = request.app.state.limiter
    return limiter


def _config_view(limiter: Limiter) -> dict[str, Any]:
    return {
        **policy_document(limiter.policy),
        "window_seconds": 60,
        "backend": limiter.backend,
        "trusted_proxies": [str(n) for n in limiter.trusted],
        "limits": {
            "default": f"{limiter.policy.per_minute}/60s per IP",
            "auth": f"{limiter.policy.auth_per_minute}/60s per IP",
            "auth_strict": f"{max(1, limiter.policy.auth_per_minute // 2)}/300s per IP",
            "second_factor": f"{max(1, limiter.policy.auth_per_minute // 2)}/300s per user",
            "export": f"{limiter.policy.export_per_minute}/60s per user",
            "protocol": (
                f"{limiter.policy.protocol_per_minute}/60s per IP"
                if limiter.policy.protocol_per_minute
                else "not limited"
            ),
        },
    }


@router.get("/rate-limit")
def get_rate_limit(request: Request, actor: Admin) -> JSONResponse:
    return ok(_config_view(_limiter(request)))


@router.put("/rate-limit")
def put_rate_limit(
    request: Request, body: RateLimitUpdate, session: UnitOfWork, actor: Admin
) -> JSONResponse:
    changes = body.model_dump(exclude_none=True)
    if not changes:
        raise InvalidInput("nothing to change")
    document = _stored(session)
    document.update(changes)
    row = SecurityRepository(session).put_setting(SETTING, document, now(request))
    record(
        AuditRepository(session, actor.org_id),
        actor,
        "security.rate_limit_updated",
        "rate_limit",
        None,
        changes,
    )
    session.commit()
    limiter = _limiter(request)
    limiter.apply(document, row.version)  # here at once; other processes within seconds
    return ok(_config_view(limiter), "Rate limit settings updated")


def _stored(session: UnitOfWork) -> dict[str, Any]:
    row = SecurityRepository(session).setting(SETTING)
    return dict(row.value) if row else {}


@router.get("/rate-limit/stats")
async def rate_limit_stats(request: Request, actor: Admin) -> JSONResponse:
    limiter = _limiter(request)
    shared = None
    if limiter.redis is not None and limiter.redis.available():
        try:
            shared = await limiter.redis.stats()
        except (RedisError, OSError, TimeoutError) as exc:  # report this process only
            limiter.redis.mark_down(exc)
    counts = shared if shared is not None else dict(limiter.counts)
    rules: dict[str, dict[str, int]] = {}
    for name, value in counts.items():
        rule, _, outcome = name.rpartition(":")
        rules.setdefault(rule, {"allowed": 0, "blocked": 0})[outcome] = value
    return ok(
        {
            "enabled": limiter.policy.enabled,
            "backend": limiter.backend,
            "scope": "all processes" if shared is not None else "this process",
            "total_allowed": sum(r["allowed"] for r in rules.values()),
            "total_blocked": sum(r["blocked"] for r in rules.values()),
            "rules": rules,
            "tracked_clients_in_memory": len(limiter.memory),
        }
    )


@router.post("/rate-limit/reset")
def rate_limit_reset(request: Request, session: UnitOfWork, actor: Admin) -> JSONResponse:
    """Clears every window: in Redis at once, in each process's memory within seconds (a
    new reset generation in the shared settings)."""
    limiter = _limiter(request)
    removed = 0
    if limiter.redis is not None:
        try:
            removed = limiter.redis.reset_blocking()
        except (RedisError, OSError) as exc:  # memory windows are still reset below
            limiter.redis.mark_down(exc)
    document = _stored(session)
    document["reset_generation"] = int(document.get("reset_generation", 0)) + 1
    row = SecurityRepository(session).put_setting(SETTING, document, now(request))
    record(
        AuditRepository(session, actor.org_id),
        actor,
        "security.rate_limit_reset",
        "rate_limit",
        None,
        {"redis_keys_removed": removed},
    )
    session.commit()
    limiter.counts.clear()
    limiter.apply(document, row.version)
    return ok({"reset": True, "redis_keys_removed": removed}, "Rate limit counters reset")


def install_jobs(rt: Runtime) -> None:
    rotator = rotation.Rotator(rt.sessions, rt.keys, kek_file(rt.settings), rt.settings, rt.clock)
    rt.jobs.every(rotation.JOB, 10.0, rotator.run)
