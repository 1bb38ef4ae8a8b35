"""The shared store on Redis: several processes on several machines (``pip install 'otelflow[redis]'``).

URL: ``redis://host:port/db``, ``redis://:password@host:port/db``, ``rediss://user:password@host:port/db``
(TLS), or ``unix:///path/to/redis.sock``. The password is never shown: messages use
:func:`~otelflow.stores.redact_url`.

Layout (prefix ``otelflow:``): values of a namespace in one hash ``otelflow:kv:<ns>``, their write
order in a sorted set ``otelflow:ord:<ns>``; locks are plain keys ``otelflow:lock:<name>`` holding the
holder id, with the lease as the key's expiry (Redis's clock, so client clocks do not matter). Every
write is one Lua script (atomic on the server) that also publishes to ``otelflow:chan:<ns>``, so a
:meth:`~RedisStore.watch` wakes as soon as the value is there -- no polling.

Round trips: ``get``/``put``/``try_lock``/``release_lock`` one each; lock acquire + release = 2.

Now-or-never writes (``put(..., now_or_never=True)``: a transaction's record). A command the client has given up
on can still run: a server that stalls (SIGSTOP, a long fork, ``CLIENT PAUSE``) runs what was queued on its
sockets when it resumes, long after the client's ``socket_timeout``. So such a write carries a deadline in the
server's own clock (``TIME``) and its script refuses to write after it. The deadline is half the socket timeout
after the write is sent: the client waits at least the whole timeout for the reply, so by the time it gives up
the server refuses. This process knows the server's clock as a lower bound of ``TIME - time.monotonic()`` taken
from one ``TIME`` call (reply time counted against it, so the bound errs towards refusing), re-measured once a
minute and after any connection error or refusal; the other half of the timeout absorbs clock drift and steps.
:meth:`~RedisStore.revoke` (compare-and-delete) also leaves a marker that refuses the revoked write if it
arrives later, whatever the clocks say. Needs Redis >= 5 (scripts replicate their effects: a replica or an
AOF replay applies the write, it does not re-check the deadline).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from otelflow.stores import (
    LockLost,
    SlotGrant,
    SlotUsage,
    Store,
    StoreError,
    StoreItem,
    StoreUnavailable,
    Watch,
    _check_names,
    _check_slot_request,
    _no_decay_error,
    _too_many_error,
)

__all__ = ["RedisStore"]

_PREFIX = "otelflow:"
_CONNECT_TIMEOUT_S = 5.0
_SOCKET_TIMEOUT_S = 10.0
_SUBSCRIBE_TIMEOUT_S = 5.0
# A now-or-never write must run on the server within this share of the socket timeout after it was sent.
_DEADLINE_SHARE = 0.5
# The server clock sample is re-measured after this long (drift between two samples stays far below the margin).
_CLOCK_MAX_AGE_S = 60.0
# How long a revoked write stays refused by its marker (the deadline refuses it after that anyway).
_REVOKED_MARKER_MS = 24 * 3600 * 1000

# KEYS: hash, lock key ('' = no fence), revoked marker ('' = none)[, order zset, sequence: to notify].
# ARGV: key, value, if_absent, holder, deadline in µs of the server's TIME ('' = none)[, channel: to notify].
# The parts for notifying come last and only when used: the commit's record write is the shorter command.
# Returns 1 written, 0 present already (if_absent), -1 lock lost, -2 past the deadline, -3 revoked.
_PUT = """
if ARGV[5] ~= '' then
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000000 + tonumber(t[2]) > tonumber(ARGV[5]) then return -2 end
  if redis.call('EXISTS', KEYS[3]) == 1 then return -3 end
end
if KEYS[2] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[4] then return -1 end
if ARGV[3] == '1' and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[6] then
  redis.call('ZADD', KEYS[4], redis.call('INCR', KEYS[5]), ARGV[1])
  redis.call('PUBLISH', ARGV[6], ARGV[1])
end
return 1
"""
# KEYS: hash, order zset, revoked marker; ARGV: key, value, marker lifetime ms, channel.
# The marker first: a now-or-never put of this value that arrives later is refused.
_REVOKE = """
redis.call('SET', KEYS[3], '1', 'PX', ARGV[3])
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[4], ARGV[1])
return 1
"""
# KEYS: hash, order zset; ARGV: key, channel
_DELETE = """
local n = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if n > 0 then redis.call('PUBLISH', ARGV[2], ARGV[1]) end
return n
"""
# KEYS: lock; ARGV: holder, lease ms. Take a free lock or renew our own.
_TRY_LOCK = """
local current = redis.call('GET', KEYS[1])
if current == false or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Counted slots. Per limit: a hash otelflow:slots:<ns>:<name> (holder -> "occupy:expiry_ms") and a hash
# otelflow:decay:<ns>:<name> (level, at_ms) for decaying rate-limit slots. Times are the server's (TIME).
# KEYS: kv hash of ns, then per name: slots hash, decay hash. ARGV: occupy, holder, lease ms, mode, names...
# Returns {status, found..., '|', limited...}: status 1 taken, 0 busy, -1 too many (names), -2 no decay (names).
_ACQUIRE_SLOTS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local occupy = tonumber(ARGV[1])
local holder = ARGV[2]
local lease = tonumber(ARGV[3])
local mode = ARGV[4]
local found, limited, decays, too_many, no_decay = {}, {}, {}, {}, {}
local busy = false
for i = 5, #ARGV do
  local name = ARGV[i]
  local skey, dkey = KEYS[2 + (i - 5) * 2], KEYS[3 + (i - 5) * 2]
  local raw = redis.call('HGET', KEYS[1], name)
  if raw then
    table.insert(found, name)
    local rec = cjson.decode(raw)
    if rec['active'] ~= false then
      local limit = tonumber(rec['limit']) or 0
      local decay = tonumber(rec['slot_decay_per_second']) or 0
      if occupy > limit then table.insert(too_many, name)
      elseif mode == 'rate_limit' and decay <= 0 then table.insert(no_decay, name)
      else
        table.insert(limited, i)
        decays[i] = decay
        local used = 0
        local held = redis.call('HGETALL', skey)
        for j = 1, #held, 2 do
          local occ, exp = string.match(held[j + 1], '^(%d+):(%d+)$')
          if tonumber(exp) <= now then redis.call('HDEL', skey, held[j])
          elseif held[j] ~= holder then used = used + tonumber(occ) end
        end
        if decay > 0 then
          local d = redis.call('HMGET', dkey, 'level', 'at')
          if d[1] then used = used + math.max(0, tonumber(d[1]) - decay * math.max(0, now - tonumber(d[2])) / 1000) end
        end
        if used + occupy > limit + 1e-9 then busy = true end
      end
    end
  end
end
if #too_many > 0 then table.insert(too_many, 1, -1) return too_many end
if #no_decay > 0 then table.insert(no_decay, 1, -2) return no_decay end
local out = {busy and 0 or 1}
for _, n in ipairs(found) do table.insert(out, n) end
table.insert(out, '|')
for _, i in ipairs(limited) do table.insert(out, ARGV[i]) end
if busy then return out end
for _, i in ipairs(limited) do
  local skey, dkey = KEYS[2 + (i - 5) * 2], KEYS[3 + (i - 5) * 2]
  if mode == 'rate_limit' then
    local decay = decays[i]
    local level = 0
    local d = redis.call('HMGET', dkey, 'level', 'at')
    if d[1] then level = math.max(0, tonumber(d[1]) - decay * math.max(0, now - tonumber(d[2])) / 1000) end
    level = level + occupy
    redis.call('HSET', dkey, 'level', tostring(level), 'at', tostring(now))
    redis.call('PEXPIRE', dkey, math.ceil(level / decay * 1000) + 1000)
  else
    redis.call('HSET', skey, holder, occupy .. ':' .. (now + lease))
  end
end
return out
"""
# KEYS: slots hashes; ARGV: holder, lease ms. Renews the holder's live entries; returns how many.
_RENEW_SLOTS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = 0
for _, key in ipairs(KEYS) do
  local v = redis.call('HGET', key, ARGV[1])
  if v then
    local occ, exp = string.match(v, '^(%d+):(%d+)$')
    if tonumber(exp) > now then
      redis.call('HSET', key, ARGV[1], occ .. ':' .. (now + tonumber(ARGV[2])))
      n = n + 1
    end
  end
end
return n
"""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _revoked_marker(namespace: str, key: str, value: str) -> str:
    digest = hashlib.sha1(f"{namespace}\0{key}\0{value}".encode(), usedforsecurity=False).hexdigest()
    return f"{_PREFIX}revoked:{digest}"


class _Script:
    """A Lua script run with EVALSHA and loaded when the server does not know it (NOSCRIPT): what redis-py's
    ``register_script`` does, without its per-call pipeline checks (~10 µs a call)."""

    __slots__ = ("_client", "_noscript", "_source", "sha")

    def __init__(self, client: Any, source: str, noscript: type[Exception]) -> None:
        self._client, self._source, self._noscript = client, source, noscript
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    def __call__(self, keys: list[str], args: list[Any]) -> Any:
        try:
            return self._client.evalsha(self.sha, len(keys), *keys, *args)
        except self._noscript:  # a new or restarted server: load it, run it again (same arguments, same deadline)
            self._client.script_load(self._source)
            return self._client.evalsha(self.sha, len(keys), *keys, *args)


class RedisStore(Store):
    """:class:`~otelflow.stores.Store` on a Redis server (shared by several machines)."""

    backend = "redis"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        try:
            import redis
        except ImportError as exc:
            raise StoreError(
                f"The store URL {self.display_url!r} needs the redis client: pip install 'otelflow[redis]'."
            ) from exc
        self._redis = redis
        try:
            self._client = redis.Redis.from_url(
                url, socket_connect_timeout=_CONNECT_TIMEOUT_S, socket_timeout=_SOCKET_TIMEOUT_S,
                health_check_interval=30,
            )
        except ValueError as exc:
            raise StoreError(f"Bad redis store URL {self.display_url!r}: {self._scrub(exc)}") from None
        noscript = redis.exceptions.NoScriptError
        self._put = _Script(self._client, _PUT, noscript)
        self._revoke = _Script(self._client, _REVOKE, noscript)
        self._delete = _Script(self._client, _DELETE, noscript)
        self._try_lock = _Script(self._client, _TRY_LOCK, noscript)
        self._renew = _Script(self._client, _RENEW, noscript)
        self._release = _Script(self._client, _RELEASE, noscript)
        self._acquire_slots = _Script(self._client, _ACQUIRE_SLOTS, noscript)
        self._renew_slots = _Script(self._client, _RENEW_SLOTS, noscript)
        # The socket timeout in force (a ``?socket_timeout=`` in the URL wins over ours): how long the client waits
        # for a reply, so what a now-or-never write's deadline is measured against.
        timeout = self._client.connection_pool.connection_kwargs.get("socket_timeout") or _SOCKET_TIMEOUT_S
        self._deadline_s = float(timeout) * _DEADLINE_SHARE
        # (lower bound of the server's TIME minus time.monotonic(), in µs; monotonic time it was measured)
        self._clock: tuple[float, float] | None = None

    def _scrub(self, exc: BaseException) -> str:
        message = str(exc)
        password = self._password()
        if password:
            message = message.replace(password, "***")
        return message

    def _password(self) -> str | None:
        import urllib.parse

        try:
            return urllib.parse.urlsplit(self.url).password
        except ValueError:
            return None

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        # Re-raised without chaining: redis-py messages are scrubbed of the password, the originals are not.
        try:
            yield
        except (self._redis.exceptions.ConnectionError, self._redis.exceptions.TimeoutError) as exc:
            self._clock = None  # the server may be another one, or its clock stepped: measure it again
            raise StoreUnavailable(
                f"Redis store {self.display_url} is unreachable ({what}): {type(exc).__name__}: {self._scrub(exc)}. "
                "Check that the server is running and OTELFLOW_STORE_URL is right."
            ) from None
        except self._redis.exceptions.RedisError as exc:
            raise StoreError(
                f"Redis store {self.display_url} refused {what}: {type(exc).__name__}: {self._scrub(exc)}"
            ) from None

    @staticmethod
    def _keys(namespace: str) -> tuple[str, str, str]:
        return f"{_PREFIX}kv:{namespace}", f"{_PREFIX}ord:{namespace}", f"{_PREFIX}chan:{namespace}"

    # --- values ---------------------------------------------------------------------------------
    def get(self, namespace: str, key: str) -> str | None:
        with self._errors("read"):
            value = self._client.hget(self._keys(namespace)[0], key)
        return None if value is None else _text(value)

    def put(
        self,
        namespace: str,
        key: str,
        value: str,
        *,
        if_absent: bool = False,
        fence: tuple[str, str] | None = None,
        notify: bool = True,
        now_or_never: bool = False,
    ) -> bool:
        _check_names(namespace, key)
        hash_key, order_key, channel = self._keys(namespace)
        if not notify and fence is None and not now_or_never:  # a plain record: one command, as cheap as a SET
            with self._errors("write"):
                if if_absent:
                    return bool(self._client.hsetnx(hash_key, key, value))
                self._client.hset(hash_key, key, value)
            return True
        lock_key = f"{_PREFIX}lock:{fence[0]}" if fence else ""
        holder = fence[1] if fence else ""
        marker = _revoked_marker(namespace, key, value) if now_or_never else ""
        with self._errors("write"):
            deadline = ""
            if now_or_never:
                offset = self._server_offset_us()
                # Taken before the send: the client waits at least the whole socket timeout from the send on.
                deadline = str(math.floor((time.monotonic() + self._deadline_s) * 1e6 + offset))
            keys = [hash_key, lock_key, marker]
            args = [key, value, "1" if if_absent else "0", holder, deadline]
            if notify:
                keys += (order_key, f"{_PREFIX}seq")
                args.append(channel)
            result = int(self._put(keys=keys, args=args))
        if result >= 0:
            return result == 1
        if result == -1 and fence is not None:
            raise LockLost(
                f"Lock {fence[0]!r} is no longer held by {fence[1]} (its lease expired); nothing was written."
            )
        if result == -2:
            self._clock = None  # a stale or loose clock sample refuses too early: measure it again next time
            raise StoreUnavailable(
                f"Redis store {self.display_url} ran a write more than {self._deadline_s:g}s after it was sent and "
                "refused it (nothing was written): a write that late may run after its client gave up on it. Check "
                "the server's load, or raise socket_timeout in the store URL."
            )
        reason = "it was revoked (Store.revoke)" if result == -3 else f"reply {result}"
        raise StoreError(f"Redis store {self.display_url} refused the write of {key!r}: {reason}.")

    def _server_offset_us(self) -> float:
        """A lower bound of the server's ``TIME`` minus this process's ``time.monotonic()``, in µs: one ``TIME``
        when there is no sample yet, or it is over a minute old (the reply's delay only lowers the bound)."""
        clock = self._clock
        if clock is not None and time.monotonic() - clock[1] < _CLOCK_MAX_AGE_S:
            return clock[0]
        reply: Any = self._client.time()
        received = time.monotonic()
        offset = int(reply[0]) * 1_000_000 + int(reply[1]) - received * 1e6
        self._clock = (offset, received)
        return offset

    def revoke(self, namespace: str, key: str, value: str) -> bool:
        _check_names(namespace, key)
        hash_key, order_key, channel = self._keys(namespace)
        with self._errors("revoke"):
            return int(self._revoke(keys=[hash_key, order_key, _revoked_marker(namespace, key, value)],
                                    args=[key, value, _REVOKED_MARKER_MS, channel])) == 1

    def delete(self, namespace: str, key: str) -> bool:
        hash_key, order_key, channel = self._keys(namespace)
        with self._errors("delete"):
            return int(self._delete(keys=[hash_key, order_key], args=[key, channel])) > 0

    def items(self, namespace: str, prefix: str = "") -> list[StoreItem]:
        hash_key, order_key, _ = self._keys(namespace)
        with self._errors("list"):
            pipe = self._client.pipeline(transaction=True)
            pipe.zrange(order_key, 0, -1)
            pipe.hgetall(hash_key)
            order, values = pipe.execute()
        by_key = {_text(k): _text(v) for k, v in values.items()}
        keys = [_text(k) for k in order]
        ordered = set(keys)
        keys += sorted(k for k in by_key if k not in ordered)  # written with notify=False
        return [StoreItem(k, by_key[k]) for k in keys if k.startswith(prefix) and k in by_key]

    def watch(self, namespace: str) -> Watch:
        return _RedisWatch(self, self._keys(namespace)[2])

    # --- locks ----------------------------------------------------------------------------------
    def try_lock(self, name: str, holder: str, lease_seconds: float) -> bool:
        _check_names(name, holder)
        with self._errors("lock"):
            return int(self._try_lock(keys=[f"{_PREFIX}lock:{name}"], args=[holder, _ms(lease_seconds)])) == 1

    def renew_lock(self, name: str, holder: str, lease_seconds: float) -> bool:
        with self._errors("lock renewal"):
            return int(self._renew(keys=[f"{_PREFIX}lock:{name}"], args=[holder, _ms(lease_seconds)])) == 1

    def release_lock(self, name: str, holder: str) -> bool:
        with self._errors("lock release"):
            return int(self._release(keys=[f"{_PREFIX}lock:{name}"], args=[holder])) == 1

    def lock_holder(self, name: str) -> str | None:
        with self._errors("lock read"):
            value = self._client.get(f"{_PREFIX}lock:{name}")
        return None if value is None else _text(value)

    # --- counted slots --------------------------------------------------------------------------
    @staticmethod
    def _slot_keys(namespace: str, name: str) -> tuple[str, str]:
        return f"{_PREFIX}slots:{namespace}:{name}", f"{_PREFIX}decay:{namespace}:{name}"

    def try_acquire_slots(
        self,
        names: list[str],
        occupy: int,
        holder: str,
        lease_seconds: float,
        *,
        namespace: str,
        mode: str = "concurrency",
    ) -> SlotGrant:
        _check_slot_request(names, occupy, holder, lease_seconds, mode)
        unique = list(dict.fromkeys(names))
        keys = [self._keys(namespace)[0]]
        for name in unique:
            keys.extend(self._slot_keys(namespace, name))
        with self._errors("slot acquisition"):
            reply = self._acquire_slots(keys=keys, args=[occupy, holder, _ms(lease_seconds), mode, *unique])
        status = int(reply[0])
        rest = [_text(v) for v in reply[1:]]
        if status == -1:
            raise _too_many_error(tuple(rest))
        if status == -2:
            raise _no_decay_error(tuple(rest))
        bar = rest.index("|")
        return SlotGrant(status == 1, tuple(rest[:bar]), tuple(rest[bar + 1:]))

    def renew_slots(self, names: list[str], holder: str, lease_seconds: float, *, namespace: str) -> bool:
        keys = [self._slot_keys(namespace, name)[0] for name in names]
        with self._errors("slot renewal"):
            return int(self._renew_slots(keys=keys, args=[holder, _ms(lease_seconds)])) > 0

    def release_slots(self, names: list[str], holder: str, *, namespace: str) -> int:
        with self._errors("slot release"):
            if len(names) == 1:  # the common case: one command
                return int(self._client.hdel(self._slot_keys(namespace, names[0])[0], holder))
            pipe = self._client.pipeline(transaction=True)
            for name in names:
                pipe.hdel(self._slot_keys(namespace, name)[0], holder)
            return sum(int(n) for n in pipe.execute())

    def slot_usage(self, name: str, *, namespace: str) -> SlotUsage:
        slots_key, decay_key = self._slot_keys(namespace, name)
        with self._errors("slot read"):
            pipe = self._client.pipeline(transaction=True)
            pipe.time()
            pipe.hgetall(slots_key)
            pipe.hmget(decay_key, ["level", "at"])
            pipe.hget(self._keys(namespace)[0], name)
            (secs, micros), held, (level, at), record = pipe.execute()
        now_ms = int(secs) * 1000 + int(micros) // 1000
        live: list[tuple[int, str, int]] = []
        for holder, value in held.items():
            occupy, _, expires = _text(value).partition(":")
            if int(expires) > now_ms:
                live.append((int(expires), _text(holder), int(occupy)))
        decaying = 0.0
        if level is not None and record is not None:
            import json

            decay = float(json.loads(_text(record)).get("slot_decay_per_second") or 0.0)
            decaying = max(0.0, float(level) - decay * max(0.0, now_ms - float(at)) / 1000)
        return SlotUsage({holder: occupy for _, holder, occupy in sorted(live)}, decaying)

    def reset_slots(self, name: str, *, namespace: str) -> None:
        with self._errors("slot reset"):
            self._client.delete(*self._slot_keys(namespace, name))

    def close(self) -> None:
        self._client.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _RedisWatch(Watch):
    """A pub/sub subscription to the namespace's channel, confirmed before the caller reads."""

    def __init__(self, store: RedisStore, channel: str) -> None:
        self._store = store
        with store._errors("watch"):
            # Typed as a plain factory: redis-py annotates pubsub() in some releases and not in others.
            make_pubsub: Callable[[], Any] = store._client.pubsub
            self._pubsub = make_pubsub()
            self._pubsub.subscribe(channel)
            # Wait for the server's confirmation: only then is a write made after our read sure to reach us.
            deadline = time.monotonic() + _SUBSCRIBE_TIMEOUT_S
            while True:
                message = self._pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
                if message is not None and message.get("type") == "subscribe":
                    break
                if time.monotonic() >= deadline:
                    self._pubsub.close()
                    raise StoreUnavailable(f"Redis store {store.display_url}: no subscribe confirmation "
                                           f"within {_SUBSCRIBE_TIMEOUT_S}s.")

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._store._errors("watch"):
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                message = self._pubsub.get_message(timeout=remaining)
                if message is not None and message.get("type") == "message":
                    return True

    def close(self) -> None:
        # Closing a broken connection must not mask the caller's error.
        with contextlib.suppress(Exception):
            self._pubsub.close()
