"""Bulk onboarding: customers from a CSV file, users from an existing
htpasswd file, and the export that reads back into the import.

Each import runs in three steps, so that a bad file changes nothing and a
good one rewrites each tier file once:

1. **read**: parse and check every record on its own (format, lengths,
   known tier, duplicates inside the file). Every problem is collected with
   the line where its record starts; none stops the reading.
2. **plan**: compare the rows with a snapshot of the database taken with a
   handful of set-based queries (never one per row), and decide what to
   create, update or leave alone. Password checks and new hashes are the
   one expensive step (bcrypt); they are computed here, outside any
   transaction, on every core (``Hasher``).
3. **apply** (``services.apply_customer_import`` / ``services.adopt_htpasswd``):
   inside one transaction the plan is made again from a fresh, locked
   snapshot, reusing the hashes already computed, so a change made by
   someone else in the meantime is noticed instead of overwritten. The
   writes are bulk ORM calls plus bulk-created audit events, and one
   on-commit rebuild per affected tier.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.models import Prefetch
from django.db.models.functions import Lower
from django.utils import timezone

from . import audit, htpasswd, passwords
from .models import AuditEvent, Credential, Customer, Tier

T = TypeVar("T")
Progress = Callable[[str, int, int], None]

COMMAND_CUSTOMERS = "import_customers"
COMMAND_HTPASSWD = "import_htpasswd"

REQUIRED_COLUMNS = ("email", "name", "tier")
OPTIONAL_COLUMNS = ("status", "payment_status", "username", "password", "password_hash", "stripe_customer_id")
# Written by export_customers for people to read; the import ignores them,
# so an exported file imports back unchanged.
INFORMATIONAL_COLUMNS = ("other_usernames",)
EXPORT_COLUMNS = (
    "email",
    "name",
    "tier",
    "status",
    "payment_status",
    "stripe_customer_id",
    "username",
    "other_usernames",
)
CREDENTIALS_OUT_HEADER = ("email", "username", "password")

# RFC 2606 reserves .invalid: a placeholder address can never reach anyone.
PLACEHOLDER_DOMAIN = "adopted.invalid"
# Keeps each IN (...) list well under SQLite's limit on query parameters.
QUERY_CHUNK = 500
# Leading/trailing blanks from spreadsheets are dropped; newlines are not,
# so a value with an embedded newline is still refused.
_BLANKS = " \t"


@dataclass(frozen=True)
class Problem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class ImportFailed(Exception):
    """The input (or the database it meets) has problems; nothing was changed."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = sorted(problems, key=lambda p: p.line)
        super().__init__("\n".join(map(str, self.problems)))


def _chunks(items: Sequence[T], size: int = QUERY_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _decode(data: bytes) -> str:
    """UTF-8 text, with or without a BOM; a bad byte is reported by line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ImportFailed([Problem(line, "the file is not UTF-8 text")]) from exc


# --- Hashing on every core -------------------------------------------------------------


def hashing_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def parallel_map(
    fn: Callable[[Any], T], items: Sequence[Any], *, stage: str = "", progress: Progress | None = None
) -> list[T]:
    """``map`` over a thread pool sized to the usable cores.

    pyca/bcrypt releases the GIL while it hashes, so threads use every core
    without the start-up and pickling costs of processes (measured: the
    same throughput as a process pool; see docs/performance.md).
    """
    if len(items) < 2:
        return [fn(item) for item in items]
    results: list[T] = []
    with ThreadPoolExecutor(max_workers=hashing_workers()) as pool:
        for result in pool.map(fn, items):
            results.append(result)
            if progress:
                progress(stage, len(results), len(items))
    return results


class Hasher:
    """The bcrypt work of a plan: checks of given passwords against stored
    hashes, hashes of given passwords, and generated secrets.

    Planning runs with ``collect=True`` first: unknown answers are recorded
    as pending (and answered with a placeholder); ``compute_*`` then works
    them off in parallel. In the final plan, inside the transaction,
    ``collect`` is False and any answer still missing (the database changed
    in between) is computed on the spot.
    """

    PLACEHOLDER = "$2y$pending"

    def __init__(self, rounds: int | None = None) -> None:
        self.rounds = rounds if rounds is not None else settings.HTPASSWD_BCRYPT_ROUNDS
        self.collect = True
        self.verified: dict[tuple[str, str], bool] = {}
        self.hashed: dict[int, str] = {}  # line -> hash of the row's given password
        self.generated: dict[int, tuple[str, str]] = {}  # line -> (secret, hash)
        self.pending_verify: set[tuple[str, str]] = set()
        self.pending_hash: dict[int, str | None] = {}  # line -> password, or None to generate one

    def verify(self, password: str, stored: str) -> bool:
        key = (password, stored)
        if key not in self.verified:
            if self.collect:
                self.pending_verify.add(key)
                return False
            self.verified[key] = passwords.verify(password, stored)
        return self.verified[key]

    def hash_password(self, line: int, password: str) -> str:
        if line not in self.hashed:
            if self.collect:
                self.pending_hash[line] = password
                return self.PLACEHOLDER
            self.hashed[line] = passwords.hash_secret(password, self.rounds)
        return self.hashed[line]

    def generate(self, line: int) -> tuple[str, str]:
        if line not in self.generated:
            if self.collect:
                self.pending_hash[line] = None
                return "", self.PLACEHOLDER
            secret = passwords.generate_secret()
            self.generated[line] = (secret, passwords.hash_secret(secret, self.rounds))
        return self.generated[line]

    def compute_verifications(self, progress: Progress | None = None) -> None:
        keys = sorted(self.pending_verify)
        results = parallel_map(lambda key: passwords.verify(*key), keys, stage="checking passwords", progress=progress)
        self.verified.update(zip(keys, results, strict=True))
        self.pending_verify.clear()
        # Rows whose password did not verify asked for a hash while their
        # check was unknown; the next planning pass asks again if needed.
        self.pending_hash.clear()

    def compute_hashes(self, progress: Progress | None = None) -> None:
        jobs = sorted(self.pending_hash.items())

        def work(job: tuple[int, str | None]) -> tuple[str | None, str]:
            _line, password = job
            if password is None:
                secret = passwords.generate_secret()
                return secret, passwords.hash_secret(secret, self.rounds)
            return None, passwords.hash_secret(password, self.rounds)

        results = parallel_map(work, jobs, stage="hashing", progress=progress)
        for (line, password), (secret, hashed) in zip(jobs, results, strict=True):
            if password is None:
                self.generated[line] = (secret, hashed)
            else:
                self.hashed[line] = hashed
        self.pending_hash.clear()


# --- Writing a plan: set-based inserts and audit events ----------------------------------


@dataclass(eq=False)
class NewCustomer:
    """A customer the import will create. Lighter than a model instance
    (planning builds one per row, up to three times per import); ``pk`` is
    filled in once the rows are inserted."""

    name: str
    email: str
    tier: Tier
    status: str = Customer.Status.ACTIVE
    payment_status: str = Customer.PaymentStatus.CURRENT
    suspension_reason: str = Customer.SuspensionReason.NONE
    past_due_since: Any = None
    stripe_customer_id: str | None = None
    needs_review: bool = False
    notes: str = ""
    pk: int | None = None

    def __str__(self) -> str:  # as Customer.__str__, for audit labels
        return f"{self.name} <{self.email}>"

    def values(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "email": self.email,
            "tier_id": self.tier.pk,
            "status": self.status,
            "payment_status": self.payment_status,
            "suspension_reason": self.suspension_reason,
            "past_due_since": self.past_due_since,
            "stripe_customer_id": self.stripe_customer_id,
            "needs_review": self.needs_review,
            "notes": self.notes,
        }


AnyCustomer = Customer | NewCustomer


@dataclass(eq=False)
class NewCredential:
    customer: AnyCustomer
    username: str
    password_hash: str


@dataclass
class PendingEvent:
    action: str
    customer: AnyCustomer
    changes: dict[str, list[Any]]
    reason: str


@dataclass
class Changes:
    """What a plan writes. Credentials and events refer to the very
    ``NewCustomer`` objects, so they pick up the keys the inserts assign."""

    new_customers: list[NewCustomer] = field(default_factory=list)
    updated_customers: dict[int, Customer] = field(default_factory=dict)
    customer_fields: set[str] = field(default_factory=set)
    new_credentials: list[NewCredential] = field(default_factory=list)
    updated_credentials: dict[int, Credential] = field(default_factory=dict)
    events: list[PendingEvent] = field(default_factory=list)
    gaining_tiers: dict[str, None] = field(default_factory=dict)
    losing_tiers: dict[str, None] = field(default_factory=dict)

    def update_customer(self, customer: Customer, fields: Iterable[str]) -> None:
        self.updated_customers[customer.pk] = customer
        self.customer_fields.update(fields)


def insert_rows(model: type[models.Model], rows: Sequence[dict[str, Any]], *, using: str = DEFAULT_DB_ALIAS) -> None:
    """INSERT ``rows`` (dicts of attribute name to value) with one
    ``executemany`` per chunk, sending no signals.

    Why not ``bulk_create``: it prepares every value of every model instance
    through the compiler, which measured about 0.5 ms per row here, five
    times this. On PostgreSQL the rows are streamed with COPY, four times
    faster again than an INSERT per row there. Every concrete field is written, with its model default
    where a row leaves it out, so a field added later (with a default)
    needs no change here. Plain str/int/bool/None values go to the driver
    as they are; anything else (datetimes, JSON) through the field's own
    ``get_db_prep_save``.
    """
    if not rows:
        return
    connection = connections[using]
    fields = [f for f in model._meta.concrete_fields if f is not model._meta.auto_field]
    defaults = {f.attname: f.get_default() for f in fields}
    now = timezone.now()
    for f in fields:
        if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
            defaults[f.attname] = now
    prepared: dict[tuple[str, int], Any] = {}  # (attname, id(value)) -> db value, for shared objects like `now`

    def db_value(f, value: Any) -> Any:
        if value is None or isinstance(value, (str, int, bool)):
            return value
        key = (f.attname, id(value))
        if key not in prepared or isinstance(value, (dict, list)):
            prepared[key] = f.get_db_prep_save(value, connection)
        return prepared[key]

    quote = connection.ops.quote_name
    table, columns = quote(model._meta.db_table), ", ".join(quote(f.column) for f in fields)
    params = [[db_value(f, row.get(f.attname, defaults[f.attname])) for f in fields] for row in rows]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql" and hasattr(cursor.cursor, "copy"):  # psycopg 3
            # COPY: PostgreSQL's own bulk load, one stream for all rows.
            with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in params:
                    copy.write_row(row)
            return
        sql = "INSERT INTO {} ({}) VALUES ({})".format(table, columns, ", ".join(["%s"] * len(fields)))
        for chunk in _chunks(params, 2000):
            cursor.executemany(sql, chunk)


def write_changes(changes: Changes) -> None:
    """Write a plan. Call inside ``transaction.atomic()``: inserts and bulk
    updates send no signals, so the caller schedules the tier rebuilds."""
    now = timezone.now()
    insert_rows(Customer, [{**c.values(), "created_at": now, "updated_at": now} for c in changes.new_customers])
    # The new keys, looked up by email (unique): portable, where RETURNING
    # from a multi-row insert is not.
    by_email = {c.email.lower(): c for c in changes.new_customers}
    for chunk in _chunks(sorted(by_email)):
        query = Customer.objects.annotate(email_lower=Lower("email")).filter(email_lower__in=chunk)
        for email, pk in query.values_list("email_lower", "pk"):
            by_email[email].pk = pk
    insert_rows(
        Credential,
        [
            {"customer_id": c.customer.pk, "username": c.username, "password_hash": c.password_hash, "created_at": now}
            for c in changes.new_credentials
        ],
    )
    if changes.updated_customers:
        for customer in changes.updated_customers.values():
            customer.updated_at = now
        Customer.objects.bulk_update(
            list(changes.updated_customers.values()),
            sorted(changes.customer_fields | {"updated_at"}),
            batch_size=QUERY_CHUNK,
        )
    if changes.updated_credentials:
        Credential.objects.bulk_update(
            list(changes.updated_credentials.values()), ["password_hash", "rotated_at"], batch_size=QUERY_CHUNK
        )
    actor = audit.current_actor()
    common = {
        "created_at": now,
        "actor_kind": actor.kind,
        "actor_label": actor.label,
        "actor_user_id": actor.user.pk if actor.user else None,
    }
    insert_rows(
        AuditEvent,
        [
            {
                **common,
                "customer_id": event.customer.pk,
                "customer_label": str(event.customer),
                "action": event.action,
                "changes": event.changes,
                "reason": event.reason or actor.reason,
            }
            for event in changes.events
        ],
    )


def _status_action(new_status: str) -> str:
    # The same names the receivers use for single changes (see audit.py).
    return {"active": "reactivated", "suspended": "suspended", "revoked": "revoked"}[new_status]


def _created_event(customer: NewCustomer, reason: str) -> PendingEvent:
    changes = {
        "status": [None, customer.status],
        "payment_status": [None, customer.payment_status],
        "suspension_reason": [None, customer.suspension_reason],
        "tier": [None, customer.tier.slug],
    }
    return PendingEvent("created", customer, changes, reason)


def primary_credential(credentials: Sequence[Credential]) -> Credential | None:
    """The credential an import row without a username refers to, and the one
    the export names in ``username``: the oldest that is not revoked."""
    ordered = sorted(credentials, key=lambda c: (c.revoked_at is not None, c.created_at, c.pk or 0))
    return ordered[0] if ordered else None


# --- import_customers: read --------------------------------------------------------------


@dataclass
class CustomerRow:
    line: int
    email: str
    name: str
    tier: str
    status: str | None = None
    payment_status: str | None = None
    stripe_customer_id: str | None = None
    username: str | None = None
    password: str | None = None
    password_hash: str | None = None

    @property
    def key(self) -> str:
        return self.email.lower()


@dataclass
class CustomerFile:
    rows: list[CustomerRow]
    warnings: list[Problem]


def read_customer_csv(data: bytes, tier_slugs: Iterable[str], progress: Progress | None = None) -> CustomerFile:
    """Parse and check a customer CSV. Raises ImportFailed with every problem."""
    text = _decode(data)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    problems: list[Problem] = []
    warnings: list[Problem] = []
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFailed([Problem(1, "the file is empty; expected a header row")]) from None
    except csv.Error as exc:
        raise ImportFailed([Problem(1, f"malformed CSV: {exc}")]) from None
    columns = _check_header(header)
    tiers = set(tier_slugs)
    rows: list[CustomerRow] = []
    first_line: dict[tuple[str, str], int] = {}  # (column, lowered value) -> line that has it
    total_lines = text.count("\n") + 1
    while True:
        line = reader.line_num + 1  # where the next record starts, however many lines it spans
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(Problem(line, f"malformed CSV: {exc}"))
            break
        if progress and rows and len(rows) % 1000 == 0:
            progress("reading", reader.line_num, total_lines)
        if not any(value.strip() for value in record):
            continue  # a blank line
        if len(record) != len(columns):
            problems.append(Problem(line, f"expected {len(columns)} fields, found {len(record)}"))
            continue
        values = dict(zip(columns, record, strict=True))  # lengths checked above
        row, row_problems, warning = _check_row(line, values, tiers)
        problems.extend(row_problems)
        if warning:
            warnings.append(warning)
        if row is None:
            continue
        for column, value in (
            ("email", row.email),
            ("username", row.username),
            ("stripe_customer_id", row.stripe_customer_id),
        ):
            if not value:
                continue
            seen = first_line.setdefault((column, value.lower()), line)
            if seen != line:
                problems.append(Problem(line, f"duplicate {column} {value!r} (already on line {seen})"))
        rows.append(row)
    if problems:
        raise ImportFailed(problems)
    return CustomerFile(rows, warnings)


def _check_header(header: list[str]) -> list[str]:
    columns = [name.strip(_BLANKS).lower() for name in header]
    problems = []
    known = set(REQUIRED_COLUMNS + OPTIONAL_COLUMNS + INFORMATIONAL_COLUMNS)
    for name in columns:
        if name not in known:
            problems.append(
                f"unknown column {name!r}; the columns are {', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}"
            )
    for name in {name for name in columns if columns.count(name) > 1}:
        problems.append(f"the column {name!r} appears twice")
    for name in REQUIRED_COLUMNS:
        if name not in columns:
            problems.append(f"missing the required column {name!r}")
    if problems:
        raise ImportFailed([Problem(1, message) for message in problems])
    return columns


def _check_row(
    line: int, values: dict[str, str], tiers: set[str]
) -> tuple[CustomerRow | None, list[Problem], Problem | None]:
    def value(name: str) -> str:
        return values.get(name, "").strip(_BLANKS)

    problems: list[str] = []
    warning = None
    email = value("email")
    try:
        validate_email(email)
        if len(email) > Customer._meta.get_field("email").max_length:
            raise ValidationError("too long")
    except ValidationError:
        problems.append(f"invalid email {email!r}" if email else "the email is empty")
    name = value("name")
    if not name:
        problems.append("the name is empty")
    elif len(name) > Customer._meta.get_field("name").max_length or "\n" in name or "\r" in name:
        problems.append("the name must be one line of at most 200 characters")
    tier = value("tier").lower()  # slugs are lowercase; a spreadsheet may say "Pro"
    if tier not in tiers:
        problems.append(
            f"unknown tier {tier!r}; the tiers are {', '.join(sorted(tiers)) or '(none yet)'}"
            if tier
            else "the tier is empty"
        )
    status = value("status").lower() or None
    if status is not None and status not in Customer.Status.values:
        problems.append(f"invalid status {status!r}; use {', '.join(Customer.Status.values)}")
    payment_status = value("payment_status").lower() or None
    if payment_status is not None and payment_status not in Customer.PaymentStatus.values:
        problems.append(f"invalid payment_status {payment_status!r}; use {', '.join(Customer.PaymentStatus.values)}")
    stripe_id = value("stripe_customer_id") or None
    if stripe_id is not None and (len(stripe_id) > 255 or re.search(r"\s", stripe_id)):
        problems.append(f"invalid stripe_customer_id {stripe_id!r}")
    username = value("username") or None
    if username is not None:
        try:
            htpasswd.validate_username(username)
        except htpasswd.InvalidEntry as exc:
            problems.append(str(exc))
    # A password is taken exactly as written: blanks may be part of it.
    password = values.get("password") or None
    if password is not None:
        try:
            passwords.check_secret(password)
        except passwords.PasswordError as exc:
            problems.append(str(exc))
    password_hash = value("password_hash") or None
    if password_hash is not None:
        if password is not None:
            problems.append("give either password or password_hash, not both")
        try:
            password_hash, note = passwords.normalize_hash(password_hash)
            if note:
                warning = Problem(line, f"warning: {note}")
        except passwords.PasswordError as exc:
            problems.append(str(exc))
    if problems:
        return None, [Problem(line, message) for message in problems], None
    row = CustomerRow(line, email, name, tier, status, payment_status, stripe_id, username, password, password_hash)
    return row, [], warning


# --- import_customers: plan ------------------------------------------------------------


@dataclass
class Snapshot:
    """What the database holds about the rows of one import, read in bulk."""

    tiers: dict[str, Tier]
    customers: dict[str, Customer]  # lowered email -> customer
    customers_by_id: dict[int, Customer]
    credentials: dict[str, Credential]  # lowered username -> credential
    by_customer: dict[int, list[Credential]]
    stripe_owner: dict[str, tuple[int, str]]  # Stripe id -> (customer pk, email)
    all_usernames: set[str] | None = None  # lowered; loaded only when a username must be derived

    def usernames(self) -> set[str]:
        if self.all_usernames is None:
            self.all_usernames = set(
                Credential.objects.annotate(lower=Lower("username")).values_list("lower", flat=True)
            )
        return self.all_usernames


def _customers_query(lock: bool):
    query = Customer.objects.select_related("tier")
    # Lock the rows we may update (PostgreSQL), so a concurrent change waits
    # for this import instead of being overwritten by it. SQLite takes the
    # whole database's write lock at BEGIN IMMEDIATE anyway.
    return query.select_for_update(of=("self",)) if lock else query


def load_snapshot(
    emails: Iterable[str], usernames: Iterable[str], stripe_ids: Iterable[str], *, lock: bool = False
) -> Snapshot:
    tiers = {tier.slug: tier for tier in Tier.objects.all()}
    customers: dict[int, Customer] = {}
    for chunk in _chunks(sorted({e.lower() for e in emails})):
        for customer in _customers_query(lock).annotate(email_lower=Lower("email")).filter(email_lower__in=chunk):
            customers[customer.pk] = customer
    credentials: dict[int, Credential] = {}
    for chunk in _chunks(sorted(customers)):
        credentials.update((c.pk, c) for c in Credential.objects.filter(customer_id__in=chunk))
    for chunk in _chunks(sorted({u.lower() for u in usernames})):
        query = Credential.objects.annotate(lower=Lower("username")).filter(lower__in=chunk)
        credentials.update((c.pk, c) for c in query)
    stripe_owner: dict[str, tuple[int, str]] = {}
    for chunk in _chunks(sorted(set(stripe_ids))):
        query = Customer.objects.filter(stripe_customer_id__in=chunk).values_list("stripe_customer_id", "pk", "email")
        stripe_owner.update((stripe_id, (pk, email)) for stripe_id, pk, email in query)
    # Owners of named usernames that the file does not name by email (for
    # messages, and to complete placeholder customers from import_htpasswd).
    missing = sorted({c.customer_id for c in credentials.values()} - customers.keys())
    for chunk in _chunks(missing):
        customers.update((c.pk, c) for c in _customers_query(lock).filter(pk__in=chunk))
    by_customer: dict[int, list[Credential]] = {}
    for credential in credentials.values():
        credential.customer = customers[credential.customer_id]  # no query later for credential.customer
        by_customer.setdefault(credential.customer_id, []).append(credential)
    return Snapshot(
        tiers=tiers,
        customers={c.email.lower(): c for c in customers.values()},
        customers_by_id=customers,
        credentials={c.username.lower(): c for c in credentials.values()},
        by_customer=by_customer,
        stripe_owner=stripe_owner,
    )


@dataclass
class GeneratedSecret:
    email: str
    username: str
    secret: str


@dataclass
class CustomerPlan:
    changes: Changes
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    credentials_created: int = 0
    credentials_updated: int = 0
    generated: list[GeneratedSecret] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    # Rows that will get a generated secret (known even in a dry run, when
    # none is generated).
    generated_count: int = 0


def snapshot_for(rows: Sequence[CustomerRow], *, lock: bool = False) -> Snapshot:
    return load_snapshot(
        [r.email for r in rows],
        [r.username for r in rows if r.username],
        [r.stripe_customer_id for r in rows if r.stripe_customer_id],
        lock=lock,
    )


def plan_customer_import(
    rows: Sequence[CustomerRow], snapshot: Snapshot, hasher: Hasher, *, can_generate: bool, source: str = ""
) -> CustomerPlan:
    """Decide, row by row against the snapshot, what the import changes.

    A row is keyed by email. Its credential is the one it names by
    ``username``, else the customer's primary one; a customer without one
    (and every new customer) gets a new credential, with a username derived
    from the email when none is given and a generated secret when the row
    has neither password nor hash.
    """
    plan = CustomerPlan(Changes())
    file_emails = {row.key for row in rows}
    taken: set[str] = {row.username.lower() for row in rows if row.username}
    now = timezone.now()
    for row in rows:
        events_before = len(plan.changes.events)  # every change records an event
        created_event = None
        reason = f"{source} line {row.line}".strip()
        tier = snapshot.tiers[row.tier]
        customer = snapshot.customers.get(row.key)
        named = snapshot.credentials.get(row.username.lower()) if row.username else None
        if customer is None and named is not None and _is_placeholder_for(named.customer, file_emails):
            customer = named.customer  # complete the placeholder import_htpasswd created
        if named is not None and (customer is None or named.customer_id != customer.pk):
            owner = named.customer
            plan.problems.append(
                Problem(
                    row.line,
                    f"the username {row.username!r} belongs to another customer "
                    f"({owner.email}, tier {owner.tier.slug})",
                )
            )
            continue
        owner_id, owner_email = snapshot.stripe_owner.get(row.stripe_customer_id or "", (None, ""))
        if owner_id is not None and (customer is None or owner_id != customer.pk):
            plan.problems.append(
                Problem(
                    row.line,
                    f"the stripe_customer_id {row.stripe_customer_id!r} belongs to another customer ({owner_email})",
                )
            )
            continue
        if customer is None:
            customer = _new_customer(row, tier, now)
            plan.changes.new_customers.append(customer)
            created_event = _created_event(customer, reason)
            plan.changes.events.append(created_event)
            credential = None
        else:
            _update_customer(plan.changes, customer, row, tier, reason, now)
            # A named username is that credential, or a new one; only a row
            # without a username means the customer's primary credential.
            credential = named if row.username else primary_credential(snapshot.by_customer.get(customer.pk, []))
        is_new = customer.pk is None
        wants_credential = is_new or row.username or row.password or row.password_hash
        if credential is not None:
            _update_credential(plan, credential, row, hasher, reason, now)
        elif wants_credential:
            if not (row.password or row.password_hash) and not can_generate:
                plan.problems.append(
                    Problem(
                        row.line, "needs a generated secret: pass --credentials-out PATH (secrets are never printed)"
                    )
                )
                continue
            _add_credential(plan, customer, row, hasher, snapshot, taken, reason, created_event)
        if is_new:
            plan.created += 1
        elif len(plan.changes.events) != events_before:
            plan.updated += 1
        else:
            plan.unchanged += 1
    return plan


def _is_placeholder_for(customer: Customer, file_emails: set[str]) -> bool:
    return (
        customer.needs_review
        and customer.email.lower().endswith("@" + PLACEHOLDER_DOMAIN)
        and customer.email.lower() not in file_emails
    )


def _new_customer(row: CustomerRow, tier: Tier, now) -> NewCustomer:
    customer = NewCustomer(name=row.name, email=row.email, tier=tier, stripe_customer_id=row.stripe_customer_id)
    if row.status:
        customer.status = row.status
    if row.payment_status:
        customer.payment_status = row.payment_status
    if customer.status == Customer.Status.SUSPENDED:
        customer.suspension_reason = Customer.SuspensionReason.STAFF
    if customer.payment_status == Customer.PaymentStatus.PAST_DUE:
        customer.past_due_since = now
    return customer


def _update_customer(changes: Changes, customer: Customer, row: CustomerRow, tier: Tier, reason: str, now) -> None:
    """Apply the row's values to ``customer`` in memory, recording events.

    Only values the row gives are compared: an empty cell leaves the stored
    value alone, so a partial spreadsheet never wipes data.
    """
    diff: dict[str, list[Any]] = {}
    fields: set[str] = set()
    old_slug = customer.tier.slug
    if customer.email.lower() != row.key:  # a placeholder being completed
        diff["email"] = [customer.email, row.email]
        customer.email = row.email
        customer.needs_review = False
        fields |= {"email", "needs_review"}
    if customer.name != row.name:
        diff["name"] = [customer.name, row.name]
        customer.name = row.name
        fields.add("name")
    if row.stripe_customer_id and customer.stripe_customer_id != row.stripe_customer_id:
        diff["stripe_customer_id"] = [customer.stripe_customer_id, row.stripe_customer_id]
        customer.stripe_customer_id = row.stripe_customer_id
        fields.add("stripe_customer_id")
    if row.payment_status and customer.payment_status != row.payment_status:
        diff["payment_status"] = [customer.payment_status, row.payment_status]
        customer.payment_status = row.payment_status
        customer.past_due_since = now if row.payment_status == Customer.PaymentStatus.PAST_DUE else None
        fields |= {"payment_status", "past_due_since"}
    entitlement_changed = False
    if row.status and customer.status != row.status:
        diff["status"] = [customer.status, row.status]
        customer.status = row.status
        customer.suspension_reason = (
            Customer.SuspensionReason.STAFF
            if row.status == Customer.Status.SUSPENDED
            else Customer.SuspensionReason.NONE
        )
        fields |= {"status", "suspension_reason"}
        entitlement_changed = True
    if customer.tier_id != tier.pk:
        diff["tier"] = [old_slug, tier.slug]
        customer.tier = tier
        fields.add("tier")
        entitlement_changed = True
    if not diff:
        return
    changes.update_customer(customer, fields)
    if "status" in diff:
        action = _status_action(row.status)
    elif "tier" in diff:
        action = "tier_changed"
    elif "payment_status" in diff:
        action = "payment_status_changed"
    else:
        action = "updated"
    changes.events.append(PendingEvent(action, customer, diff, reason))
    if entitlement_changed:
        changes.gaining_tiers[tier.slug] = None
        if old_slug != tier.slug:
            changes.losing_tiers[old_slug] = None


def _update_credential(
    plan: CustomerPlan, credential: Credential, row: CustomerRow, hasher: Hasher, reason: str, now
) -> None:
    if row.password is not None:
        if hasher.verify(row.password, credential.password_hash):
            return  # the same password: not re-hashed, so the file stays as it is
        new_hash = hasher.hash_password(row.line, row.password)
    elif row.password_hash is not None and row.password_hash != credential.password_hash:
        new_hash = row.password_hash
    else:
        return
    credential.password_hash = new_hash
    credential.rotated_at = now
    plan.changes.updated_credentials[credential.pk] = credential
    plan.credentials_updated += 1
    changes = {"password_hash": ["…", "…"], "username": [credential.username, credential.username]}
    plan.changes.events.append(PendingEvent("credential_rotated", credential.customer, changes, reason))
    plan.changes.gaining_tiers[credential.customer.tier.slug] = None


def _add_credential(
    plan: CustomerPlan,
    customer: AnyCustomer,
    row: CustomerRow,
    hasher: Hasher,
    snapshot: Snapshot,
    taken: set[str],
    reason: str,
    created_event: PendingEvent | None,
) -> None:
    username = row.username or derive_username(row.email, snapshot.usernames(), taken)
    taken.add(username.lower())
    if row.password_hash is not None:
        password_hash = row.password_hash
    elif row.password is not None:
        password_hash = hasher.hash_password(row.line, row.password)
    else:
        secret, password_hash = hasher.generate(row.line)
        plan.generated_count += 1
        if secret:
            plan.generated.append(GeneratedSecret(row.email, username, secret))
    plan.changes.new_credentials.append(NewCredential(customer, username, password_hash))
    plan.credentials_created += 1
    _record_issue(plan.changes, customer, username, reason, created_event)
    if customer.status == Customer.Status.ACTIVE:
        plan.changes.gaining_tiers[customer.tier.slug] = None


def _record_issue(
    changes: Changes, customer: AnyCustomer, username: str, reason: str, created_event: PendingEvent | None
) -> None:
    # A customer created with its credential gets one "created" event that
    # names the username: half the audit rows of a large import, same facts.
    if created_event is not None:
        created_event.changes["username"] = [None, username]
    else:
        changes.events.append(PendingEvent("credential_issued", customer, {"username": [None, username]}, reason))


def derive_username(email: str, *taken: set[str]) -> str:
    """A valid username from the email's local part, in none of the ``taken``
    sets (lowered names)."""
    return next(
        c for c in htpasswd.username_candidates(email) if not any(c.lower() in names for names in taken)
    )


def write_credentials_file(path: Path, generated: Sequence[GeneratedSecret]) -> None:
    """Write the generated secrets to a new file that only its owner can read.

    ``O_EXCL``: an existing file is never overwritten, because it may hold
    the only copy of secrets from an earlier run.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, 0o600)  # whatever the umask
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(CREDENTIALS_OUT_HEADER)
        writer.writerows((g.email, g.username, g.secret) for g in generated)
        out.flush()
        os.fsync(out.fileno())


@dataclass
class PreparedImport:
    """A checked file and the bcrypt work done for it, ready to apply."""

    rows: list[CustomerRow]
    hasher: Hasher
    plan: CustomerPlan  # as planned before the transaction; apply plans again
    source: str


def prepare_customer_import(
    data: bytes,
    *,
    source: str,
    can_generate: bool,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> tuple[PreparedImport, list[Problem]]:
    """Read, check and plan an import, and do its bcrypt work (a dry run
    only checks given passwords). Returns the prepared import and the
    warnings; raises ImportFailed. Changes nothing."""
    parsed = read_customer_csv(data, Tier.objects.values_list("slug", flat=True), progress)
    hasher = Hasher()
    if not dry_run and all(row.password_hash for row in parsed.rows):
        # No bcrypt work whatever the database holds: the plan made inside
        # the transaction is the only one needed (and reports any problem).
        hasher.collect = False
        return PreparedImport(parsed.rows, hasher, CustomerPlan(Changes()), source), parsed.warnings
    # Planning mutates the snapshot's instances, so each pass reads afresh.
    plan = plan_customer_import(
        parsed.rows, snapshot_for(parsed.rows), hasher, can_generate=can_generate, source=source
    )
    if hasher.pending_verify:
        # Given passwords are checked against stored hashes first: only
        # those that differ are hashed, and the plan depends on which.
        hasher.compute_verifications(progress)
        plan = plan_customer_import(
            parsed.rows, snapshot_for(parsed.rows), hasher, can_generate=can_generate, source=source
        )
    if plan.problems:
        raise ImportFailed(plan.problems)
    if not dry_run:
        hasher.compute_hashes(progress)
    hasher.collect = False
    return PreparedImport(parsed.rows, hasher, plan, source), parsed.warnings


# --- import_htpasswd ---------------------------------------------------------------------


@dataclass
class HtpasswdEntry:
    line: int
    username: str
    password_hash: str


def read_htpasswd(data: bytes) -> tuple[list[HtpasswdEntry], list[Problem]]:
    """Parse an htpasswd file; return its entries and warnings. Raises
    ImportFailed for lines Apache would misread or we cannot keep."""
    text = _decode(data)
    parsed, errors = htpasswd.parse(text)
    problems = [Problem(e.lineno, e.message) for e in errors]
    warnings: list[Problem] = []
    entries: list[HtpasswdEntry] = []
    first: dict[str, int] = {}
    for item in parsed:
        seen = first.setdefault(item.username.lower(), item.lineno)
        if seen != item.lineno:
            # Apache would silently use the first line; make staff choose.
            problems.append(Problem(item.lineno, f"duplicate user {item.username!r} (already on line {seen})"))
            continue
        try:
            password_hash, note = passwords.normalize_hash(item.password_hash)
        except passwords.PasswordError as exc:
            problems.append(Problem(item.lineno, f"user {item.username!r}: {exc}"))
            continue
        if note:
            warnings.append(Problem(item.lineno, f"warning: user {item.username!r}: {note}"))
        entries.append(HtpasswdEntry(item.lineno, item.username, password_hash))
    if problems:
        raise ImportFailed(problems)
    return entries, warnings


@dataclass
class AdoptionPlan:
    changes: Changes
    adopted: int = 0  # users that got a new placeholder customer
    attached: int = 0  # users added to an existing customer of the tier
    updated: int = 0  # users whose stored hash changed to the file's
    unchanged: int = 0
    skipped: list[Problem] = field(default_factory=list)  # conflicts, with --skip-conflicts
    problems: list[Problem] = field(default_factory=list)


def _email_candidate(username: str) -> str | None:
    try:
        validate_email(username)
    except ValidationError:
        return None
    return username


def plan_htpasswd_adoption(
    tier: Tier, entries: Sequence[HtpasswdEntry], *, source: str, skip_conflicts: bool = False, lock: bool = False
) -> AdoptionPlan:
    plan = AdoptionPlan(Changes())
    emails = [e for e in (_email_candidate(entry.username) for entry in entries) if e]
    snapshot = load_snapshot(emails, [entry.username for entry in entries], [], lock=lock)
    placeholders = set(
        Customer.objects.filter(email__iendswith="@" + PLACEHOLDER_DOMAIN)
        .annotate(lower=Lower("email"))
        .values_list("lower", flat=True)
    )
    for entry in entries:
        reason = f"{source} line {entry.line}"
        credential = snapshot.credentials.get(entry.username.lower())
        owner = (
            credential.customer
            if credential
            else snapshot.customers.get((_email_candidate(entry.username) or "").lower())
        )
        if owner is not None and owner.tier_id != tier.pk:
            problem = Problem(
                entry.line,
                f"user {entry.username!r} already belongs to tier {owner.tier.slug!r} ({owner.email}); "
                "a username can be in one tier only",
            )
            (plan.skipped if skip_conflicts else plan.problems).append(problem)
            continue
        if credential is not None:
            if credential.password_hash == entry.password_hash:
                plan.unchanged += 1
                continue
            credential.password_hash = entry.password_hash
            credential.rotated_at = timezone.now()
            plan.changes.updated_credentials[credential.pk] = credential
            plan.changes.events.append(
                PendingEvent(
                    "credential_rotated", owner, {"password_hash": ["…", "…"], "username": [entry.username] * 2}, reason
                )
            )
            plan.updated += 1
        else:
            created_event = None
            if owner is None:
                owner = _placeholder_customer(entry, tier, placeholders, source)
                plan.changes.new_customers.append(owner)
                created_event = _created_event(owner, reason)
                plan.changes.events.append(created_event)
                plan.adopted += 1
            else:
                plan.attached += 1
            plan.changes.new_credentials.append(NewCredential(owner, entry.username, entry.password_hash))
            _record_issue(plan.changes, owner, entry.username, reason, created_event)
        if owner.status == Customer.Status.ACTIVE:
            plan.changes.gaining_tiers[tier.slug] = None
    return plan


def _placeholder_customer(entry: HtpasswdEntry, tier: Tier, taken: set[str], source: str) -> NewCustomer:
    email = _email_candidate(entry.username)
    if email is None:
        local = re.sub(r"[^a-z0-9]+", "-", entry.username.lower()).strip("-") or "user"
        email, n = f"{local}@{PLACEHOLDER_DOMAIN}", 1
        while email in taken:
            n += 1
            email = f"{local}-{n}@{PLACEHOLDER_DOMAIN}"
        taken.add(email)
    return NewCustomer(
        name=entry.username,
        email=email,
        tier=tier,
        needs_review=True,
        notes=(
            f"Adopted from {source} line {entry.line} on {timezone.now():%Y-%m-%d}. "
            "Placeholder details: complete the name and email."
        ),
    )


# --- export_customers --------------------------------------------------------------------


def export_records(*, with_hashes: bool = False) -> Iterator[dict[str, Any]]:
    """Every customer with tier, statuses and credentials, by email; two
    queries per 2,000 customers. Hashes only when asked for."""
    credentials = Prefetch("credentials", queryset=Credential.objects.order_by("created_at", "pk"))
    query = Customer.objects.select_related("tier").prefetch_related(credentials).order_by(Lower("email"))
    for customer in query.iterator(chunk_size=2000):
        creds = list(customer.credentials.all())
        primary = primary_credential(creds)
        ordered = ([primary] if primary else []) + [c for c in creds if c is not primary]
        record: dict[str, Any] = {
            "email": customer.email,
            "name": customer.name,
            "tier": customer.tier.slug,
            "status": customer.status,
            "payment_status": customer.payment_status,
            "stripe_customer_id": customer.stripe_customer_id or "",
            "needs_review": customer.needs_review,
            "credentials": [
                {
                    "username": c.username,
                    "label": c.label,
                    "created_at": c.created_at.isoformat(),
                    "expires_at": c.expires_at.isoformat() if c.expires_at else None,
                    "revoked_at": c.revoked_at.isoformat() if c.revoked_at else None,
                    **({"password_hash": c.password_hash} if with_hashes else {}),
                }
                for c in ordered
            ],
        }
        yield record


def export_csv(out, *, with_hashes: bool = False) -> int:
    """One row per customer in the import's columns: ``username`` is the
    credential an import row refers to; the others are listed for reading."""
    columns = EXPORT_COLUMNS + (("password_hash",) if with_hashes else ())
    writer = csv.writer(out)
    writer.writerow(columns)
    count = 0
    for record in export_records(with_hashes=with_hashes):
        creds = record["credentials"]
        row = [record[name] for name in EXPORT_COLUMNS[:6]]
        row += [creds[0]["username"] if creds else "", " ".join(c["username"] for c in creds[1:])]
        if with_hashes:
            row.append(creds[0]["password_hash"] if creds else "")
        writer.writerow(row)
        count += 1
    return count


def export_json(out, *, with_hashes: bool = False) -> int:
    records = list(export_records(with_hashes=with_hashes))
    json.dump(records, out, indent=2, ensure_ascii=False)
    out.write("\n")
    return len(records)
