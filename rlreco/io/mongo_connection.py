"""MongoDB connections: URI checks, retries of transient faults, one-line errors.

Every database call of :mod:`rlreco.io.mongo` and :mod:`rlreco.io.mongo_visit` goes through
:meth:`MongoLink.run`, which

* retries transient faults (``AutoReconnect`` and its subclasses ``NotPrimaryError`` and
  ``NetworkTimeout``, other ``ConnectionFailure``, and server error codes of the retryable-writes
  specification such as not-primary or shutdown-in-progress) with exponential backoff, up to
  :attr:`RetryPolicy.attempts` tries; every operation passed to it must be idempotent;
* never retries ``ServerSelectionTimeoutError``: an unreachable server fails once, within the
  client's ``serverSelectionTimeoutMS``;
* turns every driver error into a one-line :class:`~rlreco.errors.SyncError` naming the hosts
  (``host:port``), never a password.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    ConnectionFailure,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)
from pymongo.uri_parser import parse_uri

from rlreco.errors import SyncError, one_line

T = TypeVar("T")
Document = dict[str, Any]
MongoDatabase = Database[Document]

#: Server error codes that the retryable-writes specification treats as transient.
TRANSIENT_CODES = frozenset(
    {
        6,  # HostUnreachable
        7,  # HostNotFound
        89,  # NetworkTimeout
        91,  # ShutdownInProgress
        189,  # PrimarySteppedDown
        262,  # ExceededTimeLimit
        9001,  # SocketException
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
    }
)
AUTH_FAILED = 18
DUPLICATE_KEY = 11000
_MAX_REASON = 240
#: Documents per query batch (the server also caps a batch at 16 MB).
FIND_BATCH = 10_000


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff for transient faults.

    Attempt ``k`` (1-based) that fails transiently is followed by a pause of
    ``min(max_delay_s, base_delay_s * 2 ** (k - 1))`` seconds, unless it was the last.

    Attributes
    ----------
    attempts : int
        Tries per operation, at least 1.
    base_delay_s : float
        First pause.
    max_delay_s : float
        Longest pause.
    """

    attempts: int = 5
    base_delay_s: float = 0.1
    max_delay_s: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay_s < 0 or self.max_delay_s < 0:
            raise SyncError(
                f"retry policy needs attempts >= 1 and delays >= 0, got {self.attempts}, "
                f"{self.base_delay_s}, {self.max_delay_s}"
            )

    def delay(self, attempt: int) -> float:
        """Pause after failed attempt ``attempt`` (1-based)."""
        return float(min(self.max_delay_s, self.base_delay_s * 2.0 ** (attempt - 1)))


def redact_uri(uri: str) -> str:
    """``uri`` with its user information (user name and password) replaced by ``***``."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return "***" if "@" in uri else uri
    # The last '@' ends the user information even when an unescaped password contains '@'.
    at = rest.rfind("@")
    return f"{scheme}://***@{rest[at + 1 :]}" if at >= 0 else uri


def connect(
    uri: str,
    timeout_ms: int = 5000,
    *,
    socket_timeout_ms: int | None = None,
    policy: RetryPolicy | None = None,
) -> MongoClient[Document]:
    """Open a client on ``uri`` and check the server answers a ping.

    Parameters
    ----------
    uri : str
        ``mongodb://`` or ``mongodb+srv://`` connection string.
    timeout_ms : int
        Server selection and connect timeout: an unreachable server fails within it.
    socket_timeout_ms : int or None
        Per-operation socket timeout (None: wait for the server indefinitely).
    policy : RetryPolicy, optional
        Retries of the ping.

    Returns
    -------
    pymongo.MongoClient
        Connected client (the caller closes it).

    Raises
    ------
    SyncError
        One line: malformed URI (shown without credentials), unreachable server, failed
        authentication.
    """
    if timeout_ms <= 0:
        raise SyncError(f"MongoDB timeout must be a positive number of ms, got {timeout_ms}")
    shown = redact_uri(uri)
    try:
        nodes = parse_uri(uri)["nodelist"]
    except (ConfigurationError, ValueError) as exc:
        raise SyncError(f"malformed MongoDB URI {shown}: {_scrub(str(exc), uri)}") from None
    hosts = ",".join(f"{h}:{p}" for h, p in nodes) or shown
    try:
        client: MongoClient[Document] = MongoClient(
            uri,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            socketTimeoutMS=socket_timeout_ms,
            appname="rlreco",
        )
    except (ConfigurationError, ValueError, TypeError) as exc:
        raise SyncError(f"bad MongoDB URI {shown}: {_scrub(str(exc), uri)}") from None
    link = MongoLink(client["admin"], policy or RetryPolicy(), hosts=hosts, secret=uri)
    try:
        link.run("ping", lambda: client["admin"].command("ping"))
    except BaseException:
        client.close()
        raise
    return client


def database_of(client_or_db: Any, name: str) -> MongoDatabase:
    """``client_or_db`` itself if it is a database, else its database ``name``."""
    # Look on the type: database stand-ins (mongomock) invent any attribute on instances.
    if callable(getattr(type(client_or_db), "list_database_names", None)):
        database: MongoDatabase = client_or_db[name]
        return database
    return client_or_db


def hosts_of(database: Any) -> str:
    """``host:port`` list of a database's client, from its topology (no credentials)."""
    client = getattr(database, "client", None)
    if not isinstance(client, MongoClient):
        # A stand-in such as mongomock: name its package.
        return type(client).__module__.split(".")[0] if client is not None else "MongoDB"
    servers = client.topology_description.server_descriptions()
    return ",".join(sorted(f"{h}:{p}" for h, p in servers)) or "MongoDB"


@dataclass
class MongoLink:
    """A database plus the retry policy, error translation and round-trip count of one task.

    Attributes
    ----------
    db : pymongo.database.Database
        The target database (pymongo, or a stand-in such as mongomock).
    policy : RetryPolicy
        Retries of transient faults.
    hosts : str
        ``host:port`` list shown in errors (default: from the client's topology).
    secret : str
        Text never to show (the URI, which may hold a password).
    round_trips : int
        Commands sent so far, retries included (one per write-command kind of a bulk write,
        one per query batch).
    sleep : callable
        Pause function (tests pass a fake).
    """

    db: MongoDatabase
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    hosts: str = ""
    secret: str = ""
    round_trips: int = 0
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if not self.hosts:
            self.hosts = hosts_of(self.db)

    def run(self, what: str, call: Callable[[], T], *, commands: int = 1) -> T:
        """Run the idempotent ``call`` with retries; ``what`` names it in errors.

        Parameters
        ----------
        what : str
            E.g. ``"bulk write to rlRecomendation.cells"``.
        call : callable
            The database operation; must be safe to repeat.
        commands : int
            Round trips one attempt costs (for the round-trip count).

        Raises
        ------
        SyncError
            One line, after the last attempt of a transient fault or at once otherwise.
        """
        for attempt in range(1, self.policy.attempts + 1):
            self.round_trips += commands
            try:
                return call()
            except PyMongoError as exc:
                if not is_transient(exc) or attempt == self.policy.attempts:
                    raise self.error(what, exc, attempt) from exc
            self.sleep(self.policy.delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def find_all(
        self, collection: str, query: Document, projection: Document | None = None
    ) -> list[Document]:
        """All documents of ``collection`` matching ``query``, read in large batches."""
        docs = self.run(
            f"read from {self.db.name}.{collection}",
            lambda: list(self.db[collection].find(query, projection, batch_size=FIND_BATCH)),
        )
        self.round_trips += len(docs) // FIND_BATCH  # getMore batches
        return docs

    def error(self, what: str, exc: PyMongoError, attempts: int = 1) -> SyncError:
        """One-line :class:`SyncError` describing ``exc`` raised while doing ``what``."""
        where = f"MongoDB at {self.hosts}"
        if isinstance(exc, ServerSelectionTimeoutError):
            reason = _scrub(str(exc), self.secret)
            reason = re.split(r" \(configured timeouts|, Timeout: ", reason)[0]
            return SyncError(one_line(f"cannot reach {where} ({what}): {reason}", _MAX_REASON))
        code = getattr(exc, "code", None)
        if code == AUTH_FAILED:
            return SyncError(
                one_line(
                    f"{where} rejected the credentials ({what}): authentication failed",
                    _MAX_REASON,
                )
            )
        reason = _scrub(_reason(exc), self.secret)
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        return SyncError(one_line(f"{where}: {what} failed{tries}: {reason}", _MAX_REASON))


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the operation that raised ``exc`` may succeed."""
    if isinstance(exc, ServerSelectionTimeoutError):
        return False
    if isinstance(exc, ConnectionFailure):
        return True
    if isinstance(exc, BulkWriteError):
        codes = list(_bulk_codes(exc.details))
        return bool(codes) and all(c in TRANSIENT_CODES for c in codes)
    if isinstance(exc, OperationFailure):
        return exc.code in TRANSIENT_CODES or exc.has_error_label("RetryableWriteError")
    return False


def only_duplicate_keys(exc: BulkWriteError) -> bool:
    """Whether every error of a bulk write is a duplicate-key error (and there is one)."""
    codes = list(_bulk_codes(exc.details))
    return bool(codes) and all(c == DUPLICATE_KEY for c in codes)


def _bulk_codes(details: Mapping[str, Any]) -> Iterable[int]:
    for key in ("writeErrors", "writeConcernErrors"):
        for err in details.get(key) or ():
            yield int(err.get("code", 0))


def _reason(exc: PyMongoError) -> str:
    if isinstance(exc, BulkWriteError):
        errors = exc.details.get("writeErrors") or exc.details.get("writeConcernErrors") or []
        if errors:
            first = errors[0]
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            return f"{first.get('errmsg', 'write error')} (code {first.get('code')}){more}"
    if isinstance(exc, OperationFailure):
        msg = (exc.details or {}).get("errmsg") or str(exc)
        return f"{msg} (code {exc.code})"
    return f"{type(exc).__name__}: {exc}"


def _scrub(text: str, secret: str) -> str:
    """Remove ``secret``, its password and any URI user information from ``text``."""
    if secret:
        text = text.replace(secret, redact_uri(secret))
        userinfo = secret.partition("://")[2].rpartition("@")[0]
        password = userinfo.partition(":")[2]
        if len(password) >= 3:
            text = text.replace(password, "***")
    return re.sub(r"(mongodb(?:\+srv)?://)[^\s/]*@", r"\1***@", text)
