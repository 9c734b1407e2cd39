"""The audit view's pages under ``/audit``: search, a customer's timeline, a touch's detail,
verify, CSV export. Read-only: there are no write routes.

Every page calls the same engine functions as ``care audit`` (``ledger.audit``): filters checked
by ``make_filters``, the CSV written by ``CsvExport``, a touch by ``touch_detail``, which masks
recipients, message content and provider details, so no phone number or email address reaches
a page (verify's messages are masked here too). Who may look is ``auth``'s business.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, StreamingResponse
from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from ..config import CareConfig
from ..errors import ConfigurationError
from ..ledger.audit import (
    ROW_ID_MAX,
    CsvExport,
    Filters,
    InvalidFilter,
    anchor_key,
    make_filters,
    touch_detail,
    touches,
    verify,
)
from ..mask import scrub
from ..storage import anchors
from ..store.db import Store, check_reachable, open_store
from ..vocab import Channel, TouchStatus
from .auth import AuditorDep
from .pages import Pages

log = logging.getLogger("caretouch.web.app")

LEDGER_TABLES = (
    "touches",
    "touch_attempts",
    "touch_events",
    "ledger_chain",
    "provider_events",
    "consent_events",
    "ledger_anchors",
)
# Every number a route takes is a ledger row id: a non-negative 64-bit integer. Anything else
# (too big for the database, negative, not a number) answers 422 naming the parameter.
RowIdPath = Annotated[int, PathParam(ge=0, le=ROW_ID_MAX)]
RowIdQuery = Annotated[int, Query(ge=0, le=ROW_ID_MAX)]


class BadRequest(Exception):
    """An invalid filter or form value: answered with 422, naming it."""


def open_ledger(url: str) -> Store:
    """Open the store for reading the ledger, changing nothing.

    Only the ledger tables are required (not ``caretouch.schema.require_current_schema``'s
    version: the view reads the ledger and nothing else). A missing SQLite file is refused
    rather than created empty.
    """
    store = open_store(url)
    try:
        parsed = make_url(store.url)
        if (
            parsed.get_backend_name() == "sqlite"
            and parsed.database not in (None, "", ":memory:")
            and not Path(parsed.database).exists()
        ):
            raise ConfigurationError(
                f"store {store.masked_url()} does not exist (check $CARE_STORE_URL)"
            )
        check_reachable(store)
        # A read-only connection: on SQLite it does not take the write lock (store.db).
        reader = store.engine.execution_options(care_read_only=True)
        missing = set(LEDGER_TABLES) - set(inspect(reader).get_table_names())
        if missing:
            raise ConfigurationError(
                f"store {store.masked_url()} has no ledger table(s) {', '.join(sorted(missing))}:"
                " run `care store init`"
            )
    except BaseException:
        store.dispose()
        raise
    return store


class AuditLedger:
    """The configuration and the store the pages read, each resolved on first use."""

    def __init__(self, store_url: str | None, anchor_file: str | Path | None) -> None:
        self._store_url = store_url
        self._anchor_file = anchor_file
        self._config: CareConfig | None = None
        self._store: Store | None = None
        self._lock = threading.Lock()

    @property
    def config(self) -> CareConfig:
        if self._config is None:
            self._config = CareConfig.from_env(store=self._store_url, anchors=self._anchor_file)
        return self._config

    @property
    def store(self) -> Store:
        with self._lock:
            if self._store is None:
                self._store = open_ledger(self.config.store_url)
            return self._store


def _filters(form: dict[str, str]) -> Filters:
    """The search form's filters, checked as ``care audit`` checks its options."""
    try:
        return make_filters(
            first=form["from"],
            last=form["to"],
            customer_id=form["customer"],
            rule_id=form["rule"],
            channel=form["channel"],
            status=form["status"],
        )
    except InvalidFilter as exc:
        raise BadRequest(str(exc)) from None


def _detail_json(detail: Any) -> str:
    if detail in (None, {}, ""):
        return ""
    return json.dumps(detail, ensure_ascii=False, sort_keys=True, indent=2, default=str)


def _filter_form(
    customer: str = "",
    rule: str = "",
    channel: str = "",
    status: str = "",
    first: Annotated[str, Query(alias="from")] = "",
    last: Annotated[str, Query(alias="to")] = "",
) -> dict[str, str]:
    return {
        "customer": customer,
        "rule": rule,
        "channel": channel,
        "status": status,
        "from": first,
        "to": last,
    }


# Module-level (not in the factory) so FastAPI can resolve it from string annotations.
FormDep = Annotated[dict[str, str], Depends(_filter_form)]


def create_audit_router(ledger: AuditLedger, pages: Pages, *, page_size: int) -> APIRouter:
    """The read-only pages; each needs an authenticated auditor (``AuditorDep``)."""
    router = APIRouter()

    @router.get("/audit", response_class=HTMLResponse)
    def search(
        request: Request,
        who: AuditorDep,
        form: FormDep,
        after: RowIdQuery = 0,
    ) -> HTMLResponse:
        """Search form and one page of matching touches, in id order (keyset pagination)."""
        filters = _filters(form)
        rows = list(touches(ledger.store, filters, after=after, limit=page_size + 1))
        more = len(rows) > page_size
        rows = rows[:page_size]
        return pages.page(
            request,
            "search.html",
            who=who,
            title="Search touches",
            form=form,
            rows=rows,
            after=after,
            next_after=rows[-1]["touch_id"] if more else None,
            channels=[c.value for c in Channel],
            statuses=[s.value for s in TouchStatus],
        )

    @router.get("/audit/customers/{customer_id:path}", response_class=HTMLResponse)
    def customer(request: Request, who: AuditorDep, customer_id: str) -> HTMLResponse:
        """Every touch of one customer, newest first, with its current status."""
        customer_id = _filters({**_filter_form(), "customer": customer_id}).customer_id or ""
        rows = sorted(
            touches(ledger.store, Filters(customer_id=customer_id)),
            key=lambda r: (r["occurrence"], r["touch_id"]),
            reverse=True,
        )
        return pages.page(
            request,
            "customer.html",
            who=who,
            title=f"Customer {customer_id}",
            customer_id=customer_id,
            rows=rows,
        )

    @router.get("/audit/touches/{touch_id}", response_class=HTMLResponse)
    def touch(request: Request, who: AuditorDep, touch_id: RowIdPath) -> HTMLResponse:
        """One touch: versions and hashes, why it was decided under which consent, every
        attempt's message, the status history (as ``care audit show``; masked there)."""
        detail = touch_detail(ledger.store, touch_id)
        if detail is None:
            return pages.error_page(request, 404, "Not found", f"no touch with id {touch_id}")
        for event in detail["history"]:
            event["other"] = _detail_json(event["other"])
        return pages.page(request, "touch.html", who=who, title=f"Touch {touch_id}", t=detail)

    @router.get("/audit/verify", response_class=HTMLResponse)
    def verify_page(request: Request, who: AuditorDep) -> HTMLResponse:
        """Walk the hash chain and the anchors, as ``care audit verify`` does."""
        config = ledger.config
        report = verify(ledger.store, anchor_file=anchors(config), key=anchor_key(config))
        return pages.page(
            request,
            "verify.html",
            who=who,
            title="Verify the ledger",
            report=report,
            problem=scrub(report.problem or ""),
            warnings=[scrub(w) for w in report.warnings],
            anchor_file=str(ledger.config.anchor_file),
            keyed=anchor_key(config) is not None,
        )

    @router.get("/audit/export.csv")
    def export(who: AuditorDep, form: FormDep) -> StreamingResponse:
        """The touches matching the filters as CSV, streamed (recipients masked)."""
        filters = _filters(form)
        log.info("audit view: %s (%s) exports touches %s", who.name, who.via, filters)
        return StreamingResponse(
            iter(CsvExport(ledger.store, filters)),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="caretouch-touches.csv"'},
        )

    return router
