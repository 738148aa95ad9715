"""Accounts: sign-up, log-in (rate limited), API tokens and browser sessions.

Functions take the caller's database session and leave committing to it, except
:func:`log_in`, which must record a failure even as it refuses. Refusals raise
the project's errors with a sentence the user can act on; a failed log-in never says whether the
name or the password was wrong.
"""

from __future__ import annotations

import hmac
import re
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from edc import db, security
from edc.clock import aware_utc, human_duration
from edc.config import Settings
from edc.errors import Conflict, Forbidden, InvalidInput, NotAuthenticated, NotFound, RateLimited
from edc.models import ApiToken, KnownLoginAddress, LoginFailure, User, WebSession, utcnow

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{1,39}")
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024
# last_used_at is refreshed at most this often, so reads do not turn into writes.
TOKEN_TOUCH_S = 60.0


def normalize_name(name: str) -> str:
    """Names are case-insensitive: ``Alice`` and ``alice`` are one account."""
    normal = name.strip().lower()
    if not NAME_PATTERN.fullmatch(normal):
        raise InvalidInput(
            "A user name has 2 to 40 characters: letters, digits, '_', '.' or '-', "
            "starting with a letter or digit."
        )
    return normal


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidInput(f"A password needs at least {MIN_PASSWORD_CHARS} characters.")
    if len(password) > MAX_PASSWORD_CHARS:
        raise InvalidInput(f"A password has at most {MAX_PASSWORD_CHARS} characters.")


def user_by_name(session: Session, name: str) -> User | None:
    return session.scalar(select(User).where(User.name == name.strip().lower()))


def create_user(
    session: Session, *, name: str, password: str | None = None, is_admin: bool = False
) -> User:
    """A new account; ``password`` None makes an account that logs in with API tokens only."""
    normal = normalize_name(name)
    if password is not None:
        _check_password(password)
    if user_by_name(session, normal) is not None:
        raise Conflict(f"The user name {normal!r} is taken.")
    user = User(
        name=normal,
        password_hash=security.hash_password(password) if password is not None else None,
        is_admin=is_admin,
    )
    session.add(user)
    session.flush()
    return user


def sign_up(
    session: Session,
    settings: Settings,
    *,
    name: str,
    password: str,
    invite_code: str | None,
    client_address: str | None = None,
) -> User:
    """Sign-up as the configuration allows: open, with the invite code, or not at all. The
    address signed up from counts as one the user has logged in from."""
    if settings.signup == "closed":
        raise Forbidden("Sign-up is closed; ask the organisers for an account.")
    if settings.signup == "invite":
        expected = settings.invite_code or ""
        if not invite_code or not hmac.compare_digest(invite_code.strip(), expected):
            raise Forbidden("The invite code is wrong; ask the organisers for one.")
    user = create_user(session, name=name, password=password)
    if client_address is not None:
        _remember_address(session, user=user, client_address=client_address, now=utcnow())
    return user


@dataclass(frozen=True)
class Revoked:
    """What a password change took away from the account's other holders."""

    web_sessions: int
    api_tokens: int
    # Addresses the name had logged in from, each exempt from the name's throttle while it is
    # attacked (a thief's among them); the owner's come back at their next log-in.
    known_addresses: int


def set_password(
    session: Session, *, user: User, password: str, revoke_api_tokens: bool = False
) -> Revoked:
    """Set the password and end every browser session of the account (a changed password must
    lock a thief out); with ``revoke_api_tokens``, its API tokens are revoked too.

    The addresses the name has logged in from are forgotten as well: else a thief's would stay
    exempt from the name's throttle and could guess the new password there at the per-address
    pace. Until its owner logs in again, an attacked name is throttled for the owner too.
    """
    _check_password(password)
    user.password_hash = security.hash_password(password)
    sessions = _delete_count(session, WebSession, user.id)
    tokens = _delete_count(session, ApiToken, user.id) if revoke_api_tokens else 0
    known = session.scalars(
        select(KnownLoginAddress.key).where(KnownLoginAddress.user_id == user.id)
    ).all()
    session.execute(delete(KnownLoginAddress).where(KnownLoginAddress.user_id == user.id))
    session.flush()
    _forget_exemptions(user.name)
    return Revoked(web_sessions=sessions, api_tokens=tokens, known_addresses=len(known))


def _delete_count(session: Session, table: type[WebSession] | type[ApiToken], user_id: int) -> int:
    ids = session.scalars(select(table.id).where(table.user_id == user_id)).all()
    session.execute(delete(table).where(table.id.in_(ids)))
    return len(ids)


def set_admin(session: Session, *, user: User, is_admin: bool) -> None:
    user.is_admin = is_admin
    session.flush()


# --- log-in ---


def _failure_key(name: str, client_address: str) -> str:
    return security.digest(f"{name.strip().lower()}|{client_address}")


def _address_key(client_address: str) -> str:
    return security.digest(f"*|{client_address}")


def _name_key(name: str) -> str:
    """Failures of one name over every address."""
    return security.digest(f"per-name:{name.strip().lower()}")


def _check_key(name: str) -> str:
    """Password checks let through while the name is throttled."""
    return security.digest(f"throttled-check:{name.strip().lower()}")


def _known_key(name: str, client_address: str) -> str:
    return security.digest(f"known:{name.strip().lower()}|{client_address}")


# An address a name logged in from stays exempt from the name's throttle this long after.
KNOWN_ADDRESS_DAYS = 90


# Password checks at once, per process: each argon2id check takes 64 MiB and a core for a while,
# so a flood of guesses must queue here, briefly, rather than take the portal's memory and
# threads. One semaphore per bound, shared by every app in the process.
_checks: dict[int, threading.BoundedSemaphore] = {}
_checks_lock = threading.Lock()
CHECK_WAIT_S = 0.5  # longer than a check takes; a request waits at most this for a slot


@dataclass(frozen=True)
class _Block:
    ends: float  # time.monotonic()
    retry_at: datetime  # the same moment in UTC, for the message
    # For a throttled name: its addresses that logged in before (their _known_key), let through.
    exempt: frozenset[str] = frozenset()


# Keys (name|address, *|address, a throttled name) known to be over their limit, with when that
# ends: a flood from a blocked address, or at a throttled name, is refused from memory before
# any database work or thread. Per process, so another portal re-learns it from the database on
# its first refusal.
_blocked: dict[str, _Block] = {}
_blocked_lock = threading.Lock()
_BLOCKED_MAX = 100_000  # bounded memory under a flood from many addresses


def refuse_if_blocked(settings: Settings, *, name: str, client_address: str) -> None:
    """RateLimited, from memory, when the name at this address, the address, or the name from
    anywhere but its known addresses is already known to be over its limit; cheap enough to run
    on the event loop before a log-in takes a thread."""
    for key in (_failure_key(name, client_address), _address_key(client_address)):
        block = _block_for(settings, key)
        if block is not None:
            raise _too_many(block.retry_at, _wait_s(block))
    block = _block_for(settings, _name_key(name))
    if block is not None and _known_key(name, client_address) not in block.exempt:
        raise _throttled(block.retry_at, _wait_s(block))


def _block_for(settings: Settings, key: str) -> _Block | None:
    key = f"{settings.resolved_database_url}|{key}"
    with _blocked_lock:
        block = _blocked.get(key)
        if block is not None and block.ends > time.monotonic():
            return block
        _blocked.pop(key, None)
    return None


def _wait_s(block: _Block) -> int:
    return max(1, int(block.ends - time.monotonic()) + 1)


def _remember_blocked(
    settings: Settings,
    key: str,
    retry_at: datetime,
    wait_s: int,
    exempt: frozenset[str] = frozenset(),
) -> None:
    with _blocked_lock:
        if len(_blocked) >= _BLOCKED_MAX:
            _blocked.clear()
        block = _Block(time.monotonic() + wait_s, retry_at, exempt)
        _blocked[f"{settings.resolved_database_url}|{key}"] = block


def _forget_exemptions(name: str) -> None:
    """This process's memory of a throttle on ``name`` exempts no address any more. (Another
    process's exempts them until that block ends, within ``login_throttle_interval_s``: then the
    exempt addresses are read again from the database.)"""
    suffix = "|" + _name_key(name)
    with _blocked_lock:
        for key, block in list(_blocked.items()):
            if key.endswith(suffix) and block.exempt:
                _blocked[key] = replace(block, exempt=frozenset())


def forget_blocked() -> None:
    """Forget what this process learnt (the database it learnt from was emptied)."""
    with _blocked_lock:
        _blocked.clear()


def _too_many(retry_at: datetime, wait_s: int) -> RateLimited:
    return RateLimited(
        f"Too many failed log-ins from your address; try again in "
        f"{human_duration(wait_s)} (at {retry_at:%H:%M:%S} UTC).",
        retry_after_s=wait_s,
    )


def _throttled(retry_at: datetime, wait_s: int) -> RateLimited:
    return RateLimited(
        f"Too many failed log-ins for this user name; try again in {human_duration(wait_s)} "
        f"(at {retry_at:%H:%M:%S} UTC), or log in from an address you have logged in from "
        "before.",
        retry_after_s=wait_s,
    )


def _seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, int((moment - now).total_seconds()) + 1)


def checks_busy() -> RateLimited:
    return RateLimited(
        "Too many log-ins are being checked at once; try again in a second.", retry_after_s=1
    )


def _password_checks(bound: int) -> threading.BoundedSemaphore:
    with _checks_lock:
        return _checks.setdefault(bound, threading.BoundedSemaphore(bound))


def log_in(
    settings: Settings,
    *,
    name: str,
    password: str,
    client_address: str,
    now: datetime | None = None,
) -> User:
    """The user whose password this is; RateLimited after too many failures.

    Failures are counted per (user name, client address) and, over every name, per client address
    (so an address cannot spray guesses across accounts), over ``login_window_s``; a success
    clears its name's count at that address. Every attempt is recorded *before* it is counted and
    checked, and the record is removed only on success: so of many parallel guesses at most the
    limit get through, whatever their timing.

    Failures are also counted per name over every address (a botnet guessing one account). Past
    ``login_max_failures_per_name`` the name is throttled, not locked: one password check per
    ``login_throttle_interval_s`` from anywhere (see :func:`_pass_name_throttle`), except from an
    address that has logged in as that name before, which is exempt: the owner still gets in.

    The same answers, and the same work, whether or not the name exists. Runs its own
    transactions, so a failure stays recorded though the call raises.
    """
    refuse_if_blocked(settings, name=name, client_address=client_address)
    now = now or utcnow()
    key, address_key = _failure_key(name, client_address), _address_key(client_address)
    since = now - timedelta(seconds=settings.login_window_s)
    reserved_ids = _record(settings, [key, address_key, _name_key(name)], now)
    with db.session_scope(settings) as session:
        _refuse_over_limit(session, settings, key, settings.login_max_failures, since, now)
        _refuse_over_limit(
            session, settings, address_key, settings.login_max_failures_per_address, since, now
        )
    check_id = _pass_name_throttle(
        settings,
        name=name,
        client_address=client_address,
        reserved_ids=reserved_ids,
        since=since,
        now=now,
    )
    if check_id is not None:
        reserved_ids.append(check_id)
    checks = _password_checks(settings.login_concurrency)
    if not checks.acquire(timeout=CHECK_WAIT_S):
        # Not a guess that was checked: it must not count against the name or the address.
        _unrecord(settings, reserved_ids)
        raise checks_busy()
    try:
        with db.session_scope(settings) as session:
            user = user_by_name(session, name)
            ok = security.verify_password(user.password_hash if user else None, password)
            if ok:
                assert user is not None and user.password_hash is not None
                session.execute(delete(LoginFailure).where(LoginFailure.key == key))
                session.execute(delete(LoginFailure).where(LoginFailure.id.in_(reserved_ids)))
                _remember_address(session, user=user, client_address=client_address, now=now)
                if security.password_needs_rehash(user.password_hash):
                    user.password_hash = security.hash_password(password)
            else:
                # Old failures of anyone go here, so the table stays small.
                session.execute(delete(LoginFailure).where(LoginFailure.failed_at <= since))
    finally:
        checks.release()
    if not ok:
        raise NotAuthenticated("The user name or password is wrong.")
    assert user is not None
    return user


def _pass_name_throttle(
    settings: Settings,
    *,
    name: str,
    client_address: str,
    reserved_ids: list[int],
    since: datetime,
    now: datetime,
) -> int | None:
    """Let this attempt's password be checked, or refuse it while its name is throttled.

    None when the name is under its threshold, or the address has logged in as it before.
    Otherwise the attempt takes the name's one check of the interval and gets that record's id:
    like a failure, the check is recorded before it is counted, so of parallel attempts at most
    one gets it (two that collide are both refused, never both checked). A refused attempt was
    not checked, so it counts for nothing: its records are removed and RateLimited raised.
    """
    with db.session_scope(settings) as session:
        failures = session.scalar(
            select(func.count()).where(
                LoginFailure.key == _name_key(name), LoginFailure.failed_at > since
            )
        )
    if (failures or 0) <= settings.login_max_failures_per_name:
        return None
    if _is_known_address(settings, name=name, client_address=client_address, now=now):
        return None
    check_key, interval = _check_key(name), timedelta(seconds=settings.login_throttle_interval_s)
    [check_id] = _record(settings, [check_key], now)
    with db.session_scope(settings) as session:
        taken, oldest = session.execute(
            select(func.count(), func.min(LoginFailure.failed_at)).where(
                LoginFailure.key == check_key, LoginFailure.failed_at > now - interval
            )
        ).one()
    # Either way the name's next check is an interval away: until then, refused from memory,
    # but for the addresses the name logged in from.
    retry_at = (aware_utc(oldest) if taken > 1 else now) + interval
    wait_s = _seconds_until(retry_at, now)
    exempt = _known_keys(settings, name=name, now=now)
    _remember_blocked(settings, _name_key(name), retry_at, wait_s, exempt)
    if taken <= 1:
        return check_id
    _unrecord(settings, [*reserved_ids, check_id])
    raise _throttled(retry_at, wait_s)


def _record(settings: Settings, keys: list[str], now: datetime) -> list[int]:
    """One committed attempt record per key, before any of them is counted."""
    with db.session_scope(settings) as session:
        rows = [LoginFailure(key=key, failed_at=now) for key in keys]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def _unrecord(settings: Settings, ids: list[int]) -> None:
    with db.session_scope(settings) as session:
        session.execute(delete(LoginFailure).where(LoginFailure.id.in_(ids)))


def _is_known_address(settings: Settings, *, name: str, client_address: str, now: datetime) -> bool:
    """Whether this name logged in from this address within ``KNOWN_ADDRESS_DAYS``."""
    with db.session_scope(settings) as session:
        row = session.get(KnownLoginAddress, _known_key(name, client_address))
        recent = now - timedelta(days=KNOWN_ADDRESS_DAYS)
        return row is not None and aware_utc(row.last_login_at) > recent


def _known_keys(settings: Settings, *, name: str, now: datetime) -> frozenset[str]:
    """The known-address keys of ``name``: one query, whether or not the name exists."""
    recent = now - timedelta(days=KNOWN_ADDRESS_DAYS)
    with db.session_scope(settings) as session:
        keys = session.scalars(
            select(KnownLoginAddress.key)
            .join(User, User.id == KnownLoginAddress.user_id)
            .where(User.name == name.strip().lower(), KnownLoginAddress.last_login_at > recent)
        )
        return frozenset(keys)


def _remember_address(session: Session, *, user: User, client_address: str, now: datetime) -> None:
    """Mark the address as one ``user`` logs in from; forget the user's long-unused ones."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    # An upsert: two log-ins from one address at once must not collide on the key.
    upsert = insert(KnownLoginAddress).values(
        key=_known_key(user.name, client_address), user_id=user.id, last_login_at=now
    )
    session.execute(
        upsert.on_conflict_do_update(
            index_elements=[KnownLoginAddress.key],
            set_={"user_id": user.id, "last_login_at": now},
        )
    )
    session.execute(
        delete(KnownLoginAddress).where(
            KnownLoginAddress.user_id == user.id,
            KnownLoginAddress.last_login_at < now - timedelta(days=KNOWN_ADDRESS_DAYS),
        )
    )


def _refuse_over_limit(
    session: Session, settings: Settings, key: str, limit: int, since: datetime, now: datetime
) -> None:
    """RateLimited when more than ``limit`` attempts (this one included) are on record."""
    count, oldest = session.execute(
        select(func.count(), func.min(LoginFailure.failed_at)).where(
            LoginFailure.key == key, LoginFailure.failed_at > since
        )
    ).one()
    if count > limit and oldest is not None:
        retry_at = aware_utc(oldest) + timedelta(seconds=settings.login_window_s)
        wait_s = _seconds_until(retry_at, now)
        _remember_blocked(settings, key, retry_at, wait_s)
        raise _too_many(retry_at, wait_s)


# --- API tokens ---


def issue_api_token(session: Session, *, user: User, label: str) -> str:
    """A new token for ``user``; the caller shows it once, since only its digest is kept."""
    label = " ".join(label.split())[:100] or "token"
    token = security.new_api_token()
    session.add(ApiToken(user_id=user.id, digest=security.digest(token), label=label))
    session.flush()
    return token


# Built once: every API request looks its token up.
_TOKEN_AND_USER = (
    select(ApiToken, User)
    .join(User, User.id == ApiToken.user_id)
    .where(ApiToken.digest == bindparam("digest"))
)


def user_for_api_token(session: Session, token: str, *, now: datetime | None = None) -> User | None:
    found = session.execute(_TOKEN_AND_USER, {"digest": security.digest(token)}).one_or_none()
    if found is None:
        return None
    row, user = found
    now = now or utcnow()
    last = row.last_used_at
    if last is None or (now - aware_utc(last)).total_seconds() > TOKEN_TOUCH_S:
        row.last_used_at = now
    return user


def list_api_tokens(session: Session, *, user: User) -> list[ApiToken]:
    return list(
        session.scalars(
            select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id.desc())
        )
    )


def revoke_api_token(session: Session, *, user: User, token_id: int) -> None:
    row = session.get(ApiToken, token_id)
    if row is None or row.user_id != user.id:
        raise NotFound(f"You have no API token {token_id}.")
    session.delete(row)
    session.flush()


# --- browser sessions ---


def start_web_session(session: Session, settings: Settings, *, user: User) -> str:
    """A fresh session id (a new one at every log-in: no session fixation)."""
    session_id = security.new_session_id()
    session.add(
        WebSession(
            user_id=user.id,
            digest=security.digest(session_id),
            expires_at=utcnow() + timedelta(seconds=settings.session_max_age_s),
        )
    )
    # Expired sessions of this user go at each log-in, so the table does not grow without end.
    session.execute(
        delete(WebSession).where(WebSession.user_id == user.id, WebSession.expires_at < utcnow())
    )
    session.flush()
    return session_id


def user_for_web_session(
    session: Session, session_id: str, *, now: datetime | None = None
) -> User | None:
    row = session.scalar(select(WebSession).where(WebSession.digest == security.digest(session_id)))
    if row is None or aware_utc(row.expires_at) <= (now or utcnow()):
        return None
    return session.get(User, row.user_id)


def end_web_session(session: Session, session_id: str) -> None:
    session.execute(delete(WebSession).where(WebSession.digest == security.digest(session_id)))
