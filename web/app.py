"""The console's FastAPI application: pages, htmx fragments and the JSON API, all behind one auth check.

Every request passes :func:`_authenticate` (an HTTP middleware, so a route added later cannot
forget it): HTTP Basic or the signed session cookie of the login form; anything else gets 401
(with the login form for browsers). Every POST checks a CSRF token bound to the session (or to
the Basic user). Reads run in a transaction that is rolled back; writes go through the same
service functions as the CLI (``scoring.tiers``, ``scoring.registry``) in one unit of work.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from markupsafe import Markup, escape
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from config.app_config import AppConfig
from config.errors import LeadscoreError
from store.types import json_safe, utc_minutes
from store.usage import breakdown
from web.auth import Authenticator, User

if TYPE_CHECKING:
    from store.models import ModelVersion

log = logging.getLogger("leadscore.web")
HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "leadscore_session"
LOGIN_COOKIE = "leadscore_login"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PAGES: tuple[tuple[str, str], ...] = (
    ("/", "Overview"), ("/tiers", "Tiers"), ("/model", "Model"), ("/monitor", "Monitor"), ("/leads", "Leads"),
    ("/sync", "Sync"),
)


_SETTINGS = object()  # create_app's broker_url default: the one the settings name


class Forbidden(LeadscoreError):
    """The signed-in user may not do this (viewers look, editors change)."""


class NotFound(LeadscoreError):
    """The thing asked for does not exist."""


def _fmt_num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _count_alerts(alerts: list[dict[str, Any]]) -> str:
    from scoring.monitoring.describe import count_alerts

    return count_alerts(alerts)


def _code_spans(text: str | None) -> Markup:
    """A CLI sentence for a page: escaped, its `backticked` parts (commands, settings) as code."""
    parts = str(escape(text or "")).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: shown as it is
        return Markup(escape(text or ""))  # noqa: S704 - escaped just above
    return Markup("".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts)))  # noqa: S704 - escaped


def _short_note(notes: str | None, limit: int = 100) -> str:
    from scoring.registry import short_note

    return short_note(notes, limit)


def _fmt_pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{100 * float(value):.1f}%"


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True
    )
    env.filters["when"] = utc_minutes
    env.filters["num"] = _fmt_num
    env.filters["pct"] = _fmt_pct
    env.filters["short_note"] = _short_note
    env.filters["code_spans"] = _code_spans
    env.filters["count_alerts"] = _count_alerts
    env.filters["by_purpose"] = breakdown  # the API calls' purposes, worded as `leadscore status` words them
    env.filters["svg"] = lambda s: Markup(s) if s else ""  # noqa: S704 - our own matplotlib output
    return env


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", "")


def create_app(
    auth: Authenticator,
    *,
    engine_factory: Callable[[], Engine] | None = None,
    config: AppConfig | None = None,
    broker_url: str | None | object = _SETTINGS,
) -> FastAPI:
    """The console app. ``engine_factory`` defaults to the configured database, ``config`` to the YAML
    file, ``broker_url`` (whose workers and beat the overview shows; None: tasks run in process) to
    the settings' broker."""
    from config.app_config import load_config
    from config.settings import get_settings
    from store.db import get_engine

    app_config = config if config is not None else load_config(get_settings().config_file)
    broker: str | None = get_settings().broker_url if broker_url is _SETTINGS else broker_url  # type: ignore[assignment]
    engine_of = engine_factory or get_engine
    env = _templates()
    # No interactive docs: they would be routes outside the console's own pages and API.
    app = FastAPI(title="leadscore console", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.auth = auth
    app.state.config = app_config
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def reading() -> Iterator[Session]:
        # Closing without commit discards anything a read touched (a preview writes nothing) and,
        # unlike rollback(), leaves loaded objects readable while the page renders.
        session = Session(bind=engine_of(), expire_on_commit=False)
        try:
            yield session
        finally:
            session.close()

    @contextmanager
    def writing() -> Iterator[Session]:
        from store.db import unit_of_work

        with unit_of_work(engine_of()) as session:
            yield session

    def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        user: User | None = getattr(request.state, "user", None)
        body = env.get_template(template).render(
            request=request, user=user, pages=PAGES, path=request.url.path,
            csrf=getattr(request.state, "csrf", ""), **context,
        )
        return HTMLResponse(body, status_code=status_code)

    def login_page(request: Request, message: str | None, status_code: int = 401) -> Response:
        nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_hex(16)
        body = env.get_template("login.html").render(
            message=message, csrf=auth.csrf_token("login|" + nonce), next=_safe_next(request.url.path)
        )
        response = HTMLResponse(body, status_code=status_code)
        # A scheme browsers do not prompt for: they show the form instead of a Basic dialog.
        response.headers["WWW-Authenticate"] = 'Form realm="leadscore"'
        response.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="strict", path="/login",
                            secure=request.url.scheme == "https")
        return response

    def unauthorised(request: Request) -> Response:
        if _wants_html(request):
            return login_page(request, None)
        return JSONResponse({"error": "authentication required (HTTP Basic)"}, status_code=401,
                            headers={"WWW-Authenticate": 'Basic realm="leadscore", charset="UTF-8"'})

    def basic_user(request: Request) -> User | None | bool:
        """The Basic user; False when a Basic header was sent but is wrong; None when none was sent."""
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        name, sep, password = decoded.partition(":")
        user = auth.check(name, password) if sep else None
        return user or False

    @app.middleware("http")
    async def _authenticate(request: Request, call_next: Callable[[Request], Any]) -> Response:
        if request.url.path == "/login" and request.method == "POST":
            return await call_next(request)  # checks the submitted credentials itself (401 when wrong)
        basic = basic_user(request)
        if basic is False:
            return unauthorised(request)
        if isinstance(basic, User):
            request.state.user = basic
            request.state.csrf = auth.csrf_token("basic|" + basic.name)
        else:
            found = auth.read_session(request.cookies.get(SESSION_COOKIE))
            if found is None:
                return unauthorised(request)
            request.state.user, nonce = found
            request.state.csrf = auth.csrf_token("session|" + nonce)
        if request.method not in SAFE_METHODS:
            origin = request.headers.get("origin")
            if origin and origin != "null" and _origin_host(origin) != request.headers.get("host"):
                return _refuse(request, 403, "cross-site request refused")
        response: Response = await call_next(request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    def _refuse(request: Request, status: int, message: str) -> Response:
        if request.url.path.startswith("/api/") or not _wants_html(request):
            return JSONResponse({"error": message}, status_code=status)
        return render(request, "error.html", status_code=status, message=message)

    def check_csrf(request: Request, token: str | None) -> None:
        if not secrets.compare_digest(getattr(request.state, "csrf", ""), token or ""):
            raise Forbidden("the form expired or did not come from this console (CSRF check): reload and retry")

    def require_editor(request: Request) -> User:
        user: User = request.state.user
        if not user.can_edit:
            raise Forbidden(f"{user.name} is a viewer: only editors change tiers and models")
        return user

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, exc: Forbidden) -> Response:
        return _refuse(request, 403, str(exc))

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> Response:
        return _refuse(request, 404, str(exc))

    @app.exception_handler(LeadscoreError)
    async def _bad_input(request: Request, exc: LeadscoreError) -> Response:
        return _refuse(request, 400, str(exc))

    @app.exception_handler(SQLAlchemyError)
    async def _database(request: Request, exc: SQLAlchemyError) -> Response:
        log.error("database error on %s %s", request.method, request.url.path, exc_info=exc)
        return _refuse(request, 503, "the database is not answering (or has no leadscore schema): see the log")

    # ------------------------------------------------------------------ login

    @app.get("/login")
    def login_form(request: Request) -> Response:
        return RedirectResponse("/", status_code=303)  # signed in already (the middleware let us through)

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not nonce or not auth.csrf_ok("login|" + nonce, str(form.get("csrf") or "")):
            return login_page(request, "The sign-in form expired: try again.")
        user = auth.check(str(form.get("username") or ""), str(form.get("password") or ""))
        if user is None:
            log.warning("console sign-in failed for %r", str(form.get("username") or "")[:64])
            return login_page(request, "Wrong user name or password.")
        response = RedirectResponse(_safe_next(str(form.get("next") or "/")), status_code=303)
        response.set_cookie(SESSION_COOKIE, auth.session_cookie(user), httponly=True, samesite="lax", path="/",
                            secure=request.url.scheme == "https")
        response.delete_cookie(LOGIN_COOKIE, path="/login")
        log.info("console sign-in: %s (%s)", user.name, user.role)
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        form = await request.form()
        check_csrf(request, str(form.get("csrf") or ""))
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # ------------------------------------------------------------------ API

    @app.get("/api/health")
    def api_health() -> Response:
        from scoring.registry import champion
        from store.models import Lead, LeadLifecycle, LeadScore

        try:
            with reading() as session:
                session.execute(text("SELECT 1"))
                mv = champion(session)
                # The open ones apart: what `status` and `tiers show` count ("2686 open leads hold a
                # score"); a trial read 2798 here (converted and closed leads keep their last score).
                is_open = Lead.lifecycle == LeadLifecycle.open
                leads, open_leads = session.execute(
                    select(func.count(Lead.id), func.count(Lead.id).filter(is_open))
                    .where(Lead.is_deleted.is_(False))).one()
                scored, open_scored = session.execute(
                    select(func.count(LeadScore.id), func.count(LeadScore.id).filter(is_open))
                    .join(Lead, Lead.id == LeadScore.lead_id)
                    .where(LeadScore.is_current.is_(True), Lead.is_deleted.is_(False))).one()
        except SQLAlchemyError as exc:
            log.error("health check: database error", exc_info=exc)
            return JSONResponse({"status": "error", "database": "unreachable or no schema"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok", "champion": mv.version if mv else None,
                             "leads": int(leads or 0), "current_scores": int(scored or 0),
                             "open_leads": int(open_leads or 0), "open_scored": int(open_scored or 0)})

    @app.get("/api/workers")
    def api_workers() -> Response:
        from worker.liveness import measure

        return JSONResponse(json_safe(measure(broker, engine_of()).to_dict()))

    @app.get("/api/tiers/preview")
    def api_tiers_preview(request: Request) -> Response:
        return JSONResponse(json_safe(tier_preview(request)))

    @app.get("/api/leads/{crm_id}")
    def api_lead(crm_id: str) -> Response:
        with reading() as session:
            return JSONResponse(json_safe(lead_story(session, crm_id, app_config)))

    recent_cache: dict[tuple[Any, ...], Any] = {}
    recent_lock = threading.Lock()

    def recent_for(session: Session) -> Any:
        """The recent labelled leads (``scoring.tier_changes.recent_labelled``), computed once per champion
        and CRM clock: they do not depend on the thresholds, and only a sync or a new champion changes
        them, so a preview that follows a moving threshold costs a fraction of a second."""
        from scoring.registry import champion
        from scoring.service import crm_now
        from scoring.tier_changes import recent_labelled

        mv = champion(session)
        now = crm_now(session)
        horizon = app_config.training.horizon_days
        key = (mv.id if mv else None, mv.version if mv else None, now, horizon)
        with recent_lock:
            if key in recent_cache:
                return recent_cache[key]
        found = recent_labelled(session, as_of=now, horizon_days=horizon)
        with recent_lock:
            if len(recent_cache) >= 4:
                recent_cache.pop(next(iter(recent_cache)))
            recent_cache[key] = found
        return found

    def tier_preview(request: Request) -> dict[str, Any]:
        mode, thresholds = _policy_args(request)
        with reading() as session:
            return run_preview(session, mode, thresholds)

    def run_preview(session: Session, mode: str, thresholds: dict[str, Any]) -> dict[str, Any]:
        from scoring.pipeline import preview_with_routing
        from scoring.tiers import check_policy

        check_policy(mode, thresholds)  # a bad policy fails before the recent leads are computed
        data = preview_with_routing(session, app_config, mode, thresholds, recent=recent_for(session))
        return preview_payload(data)

    # ------------------------------------------------------------------ pages

    @app.get("/")
    def overview(request: Request) -> Response:
        from scoring.monitor import latest_report
        from scoring.monitoring.freshness import failed_words, failed_writes
        from scoring.registry import champion, recorded_auc_caveat, recorded_test_auc
        from store.queries import connection_activity, outbox_totals

        with reading() as session:
            mv = champion(session)
            report = latest_report(session)
            connections = connection_activity(session)
            shares = {c.name: c.api_budget_share for c in app_config.connections}
            for row in connections:
                row["api_budget_share"] = shares.get(row["name"])
            refused, unexpected = failed_writes(session)
            return render(
                request, "overview.html", connections=connections, outbox=outbox_totals(session),
                champion=mv, champion_auc=recorded_test_auc(mv) if mv else None, report=report,
                champion_auc_caveat=recorded_auc_caveat(mv) if mv else None,
                failed_unexpected=sum(unexpected.values()), failed_words=failed_words(refused, unexpected),
            )

    @app.get("/workers")
    def workers_fragment(request: Request) -> Response:
        """The overview's workers card, fetched after the page (a broadcast waits up to a second for
        answers): the same measurement and lines as ``leadscore status``."""
        from worker.liveness import PING_SECONDS, measure

        return render(request, "_workers.html", alive=measure(broker, engine_of()), ping=PING_SECONDS)

    @app.get("/tiers")
    def tiers_page(request: Request) -> Response:
        from scoring.registry import champion, recorded_auc_caveat
        from scoring.tiers import find_active_policy
        from store.models import TierPolicy

        with reading() as session:
            active = find_active_policy(session)
            # Thresholds cut the champion's scores: when its test AUC rests on too few test leads,
            # revops read it here too, as `leadscore tiers show` prints it.
            mv = champion(session)
            history = list(session.scalars(select(TierPolicy).order_by(TierPolicy.version.desc()).limit(50)))
            default_mode = active.mode if active else app_config.tiers.mode
            default = dict(active.thresholds) if active else dict(app_config.tiers.thresholds)
            q = request.query_params
            mode = q.get("mode", default_mode)
            values = {t: q.get(t, _fmt_threshold(default.get(t))) for t in ("A", "B", "C")}
            return render(request, "tiers.html", active=active, history=history, mode=mode, values=values,
                          champion=mv, auc_caveat=recorded_auc_caveat(mv) if mv is not None else None,
                          saved=q.get("saved"), unchanged=q.get("unchanged"), refused=q.get("refused"),
                          held=_held_words(q.get("held")))

    @app.get("/tiers/preview")
    def tiers_preview_fragment(request: Request) -> Response:
        try:
            data = tier_preview(request)
        except LeadscoreError as exc:
            return render(request, "_preview.html", data=None, error=str(exc))
        return render(request, "_preview.html", data=data, error=None)

    @app.get("/tiers/suggest")
    def tiers_suggest_fragment(request: Request) -> Response:
        from scoring.tier_economics import EconomicsError, policy_value, suggest_thresholds
        from scoring.tiers import Policy, capacity_cutoffs, check_policy, current_scores

        q = request.query_params
        try:
            value = _number(q.get("value"), "value of a converted lead")
            cost = _number(q.get("cost"), "cost of an SDR touch")
            with reading() as session:
                recent = recent_for(session)
            if recent.note:
                raise EconomicsError(recent.note)
            suggestion = suggest_thresholds(recent.probabilities, recent.converted, conversion_value=value,
                                            touch_cost=cost, scores=recent.scores)
            manual_value = None
            manual_cutoffs: dict[str, float] | None = None  # what the manual thresholds cut scores at
            try:
                mode, manual = _policy_args(request)
                policy = Policy(mode, check_policy(mode, manual))
                reference = None
                if mode == "capacity":
                    # Shares are cut on the open leads' current scores, as the preview and `tiers set` do.
                    with reading() as session:
                        reference = current_scores(session)["score"].to_numpy(dtype="int64")
                    manual_cutoffs = capacity_cutoffs(reference, policy.thresholds)
                elif mode == "score":
                    manual_cutoffs = dict(policy.thresholds)
                manual_value = policy_value(recent.probabilities, recent.converted, policy, conversion_value=value,
                                            touch_cost=cost, scores=recent.scores, reference=reference)
            except LeadscoreError:
                manual_value = None  # the manual thresholds are invalid right now; the preview says why
        except (EconomicsError, LeadscoreError) as exc:
            return render(request, "_suggest.html", suggestion=None, error=str(exc), manual_value=None,
                          manual_cutoffs=None, window={}, value=None, cost=None)
        return render(request, "_suggest.html", suggestion=suggestion, error=None, manual_value=manual_value,
                      manual_cutoffs=manual_cutoffs, window=recent.window, value=value, cost=cost)

    @app.post("/tiers")
    async def tiers_save(request: Request) -> Response:
        from scoring.pipeline import retier_and_plan
        from scoring.tier_changes import refuse_empty_tiers
        from scoring.tiers import TierPolicyError, check_policy

        form = await request.form()
        check_csrf(request, str(form.get("csrf") or ""))
        user = require_editor(request)
        mode = str(form.get("mode") or "score")
        raw = {t: str(form.get(t) or "") for t in ("A", "B", "C")}

        def save() -> Any:
            with writing() as session:  # the same path as `leadscore tiers set`
                return retier_and_plan(session, app_config, mode, values, created_by=user.name)

        try:
            values = check_policy(mode, raw)
            if form.get("confirm") != "yes":
                with reading() as session:
                    # Shares that leave a tier empty are refused before the confirmation, as the save would.
                    refuse_empty_tiers(session, mode, values)
                    data = run_preview(session, mode, values)
                return render(request, "tiers_confirm.html", mode=mode, values=values, data=data)
            result = await run_in_threadpool(save)  # re-tiering many leads must not block other requests
        except TierPolicyError as exc:
            if not _wants_html(request):
                raise
            # Back to the form as it was typed, with the reason above it (not an error page).
            return RedirectResponse("/tiers?" + urlencode({"mode": mode, **raw, "refused": str(exc)}),
                                    status_code=303)
        if result.unchanged:
            return RedirectResponse(f"/tiers?unchanged={result.version}", status_code=303)
        planned = sum(result.routing_planned.values())
        log.info("tier policy v%s set by %s in the console (%s %s); %s leads changed tier, %s routing actions "
                 "planned", result.version, user.name, mode, values, result.changed, planned)
        return RedirectResponse(f"/tiers?saved={result.version}&changed={result.changed}&planned={planned}"
                                f"&held={result.routing_held}", status_code=303)

    @app.get("/model")
    def model_page(request: Request) -> Response:
        from scoring.card import (
            concept_label,
            hand_changes,
            live_card_sections,
            status_section,
            tier_cutoff_table,
            top_importance,
        )
        from scoring.monitor import REFERENCE_KEY, Reference, active_tier_policy, latest_report, trained_at
        from scoring.registry import (
            AUC_ACROSS_VERSIONS,
            champion,
            list_versions,
            recorded_auc_caveat,
            recorded_test_auc,
            rollback_target,
        )
        from web import plots

        with reading() as session:
            mv = champion(session)
            versions = list_versions(session)
            report = latest_report(session)
            live = ((report.metrics or {}).get("performance") or {}) if report else {}
            families: list[dict[str, Any]] = []
            plots_out: dict[str, str | None] = {"calibration": None, "lift": None, "importance": None}
            cutoffs: list[dict[str, Any]] = []
            reference: Reference | None = None
            card = ""
            policy = active_tier_policy(session)
            if mv is not None:
                for family, metrics in (mv.metrics or {}).items():
                    if isinstance(metrics, dict) and "test" in metrics:
                        families.append({"family": family, "selected": family == mv.family,
                                         "validation": metrics.get("validation") or {}, "test": metrics["test"]})
                test = (mv.metrics or {}).get(mv.family, {}).get("test", {})
                plots_out["calibration"] = plots.calibration(test.get("calibration") or [],
                                                             live.get("calibration") or [])
                plots_out["lift"] = plots.lift(test.get("lift_by_decile") or [], live.get("lift_by_decile") or [])
                # The reference the monitor stored (what `leadscore models show` reads); a page view
                # does not compute one.
                stored = (mv.params or {}).get(REFERENCE_KEY)
                reference = Reference.from_dict(stored) if isinstance(stored, dict) else None
                if reference is not None:
                    plots_out["importance"] = plots.importance(
                        [(f"{concept_label(n)} ({n})", v) for n, v in top_importance(reference.importance)])
                    cutoffs = tier_cutoff_table(list(reference.outcomes), policy, mv)
                # As `leadscore models show` prints it: the stored card, its status (a caution on a
                # thin test, who changed it by hand), the live sections.
                card = ((mv.card or "").rstrip("\n") + "\n\n" + status_section(mv) + "\n"
                        + live_card_sections(mv, reference, policy))
            rows = [{"mv": v, "trained": trained_at(v), "auc": recorded_test_auc(v),
                     "hand_changes": hand_changes(v)} for v in versions]
            return render(request, "model.html", champion=mv, families=families, plots=plots_out, cutoffs=cutoffs,
                          reference=reference, policy=policy, versions=rows, card=card,
                          selection=_selection_note(mv, families) if mv is not None else None,
                          rollback_to=rollback_target(session, mv) if mv is not None else None,
                          auc_caveat=recorded_auc_caveat(mv) if mv is not None else None,
                          across=AUC_ACROSS_VERSIONS if sum(r["auc"] is not None for r in rows) > 1 else None)

    @app.post("/model/promote")
    async def model_promote(request: Request) -> Response:
        from scoring.pipeline import promote_and_rescore

        form = await request.form()
        check_csrf(request, str(form.get("csrf") or ""))
        user = require_editor(request)
        version = str(form.get("version") or "")
        def run() -> tuple[str, int | None]:
            with writing() as session:  # the same path as `leadscore models promote`: promote, rescore, plan
                mv, summary = promote_and_rescore(session, app_config, version, by=user.name)
                return mv.version, summary.scored if summary is not None else None

        name, rescored = await run_in_threadpool(run)
        if rescored is None:
            return RedirectResponse(f"/model?already={name}", status_code=303)
        log.info("model %s promoted by %s in the console; %s leads rescored", name, user.name, rescored)
        return RedirectResponse(f"/model?promoted={name}&rescored={rescored}", status_code=303)

    @app.post("/model/rollback")
    async def model_rollback(request: Request) -> Response:
        from scoring.pipeline import rollback_and_rescore

        form = await request.form()
        check_csrf(request, str(form.get("csrf") or ""))
        user = require_editor(request)
        def run() -> tuple[str, int]:
            with writing() as session:  # the same path as `leadscore models rollback`
                mv, summary = rollback_and_rescore(session, app_config, by=user.name)
                return mv.version, summary.scored

        name, rescored = await run_in_threadpool(run)
        log.info("model rolled back to %s by %s in the console; %s leads rescored", name, user.name, rescored)
        return RedirectResponse(f"/model?rolled_back={name}&rescored={rescored}", status_code=303)

    @app.get("/monitor")
    def monitor_page(request: Request) -> Response:
        from scoring.monitor import reports
        from scoring.monitoring.describe import unsaid_notes
        from scoring.monitoring.status import NOT_ENOUGH
        from web import plots

        with reading() as session:
            history = reports(session, limit=365)
        latest = history[-1] if history else None
        auc, ece, psi = [], [], []
        by_tier: dict[str, list[tuple[datetime, float]]] = {}
        alerts: list[dict[str, Any]] = []
        for r in history:
            metrics = r.metrics or {}
            perf = metrics.get("performance") or {}
            drift = metrics.get("drift") or {}
            # Only judged AUCs: one on too few conversions ("not enough data") is not a result, and
            # a run whose 1 conversion gave 1.000 drew a line at the top of an axis above 1.
            if (isinstance(perf.get("auc"), int | float) and math.isfinite(perf["auc"])
                    and perf.get("status") != NOT_ENOUGH):
                auc.append((r.as_of, float(perf["auc"])))
            if isinstance(perf.get("ece"), int | float):
                ece.append((r.as_of, float(perf["ece"])))
            if isinstance(drift.get("score_psi"), int | float):
                psi.append((r.as_of, float(drift["score_psi"])))
            # Tier conversion on elapsed leads (the monitor's own measure); older reports kept it
            # under performance.
            tiers_now = ((metrics.get("tier_conversion") or {}).get("by_tier")
                         or perf.get("conversion_by_tier") or {})
            for tier, row in tiers_now.items():
                if isinstance(row.get("conversion_rate"), int | float):
                    by_tier.setdefault(f"tier {tier}", []).append((r.as_of, 100 * float(row["conversion_rate"])))
            alerts.extend({"as_of": r.as_of, **a} for a in (r.alerts or []))
        monitoring = app_config.monitoring
        base = ((latest.metrics or {}).get("performance") or {}).get("baseline_auc") if latest else None
        baseline = float(base) if isinstance(base, int | float) and math.isfinite(base) else None
        charts = {
            "psi": plots.time_series({"score PSI": psi}, ylabel="score PSI",
                                     hlines=[(monitoring.psi_warn, "warn"), (monitoring.psi_alert, "alert")]),
            # The live AUC is compared with the reference leads' AUC (the monitor's baseline), not
            # with the test AUC of training: the line shows what it is judged against.
            "auc": plots.time_series({"live AUC": auc}, ylabel="AUC", ylim=_auc_axis(auc, baseline), hlines=(
                [(baseline, f"baseline {baseline:.3f} (reference leads)")] if baseline is not None else [])),
            "ece": plots.time_series({"ECE": ece}, ylabel="ECE"),
            "tiers": plots.time_series(by_tier, ylabel="converted (%)",
                                       colours={f"tier {t}": c for t, c in plots.TIER_COLOURS.items()}),
        }
        latest_metrics = (latest.metrics or {}) if latest else {}
        drift = latest_metrics.get("drift") or {}
        feature_psi = sorted((drift.get("feature_psi") or {}).items(), key=lambda kv: -kv[1])
        measures = _measures_with_why(latest_metrics)
        # The notes the CLI prints: those no line of the measures table already says.
        notes = unsaid_notes(latest_metrics, [line for _, _, why in measures for line in why])
        return render(request, "monitor.html", latest=latest, metrics=latest_metrics, charts=charts, measures=measures,
                      notes=notes, not_enough=NOT_ENOUGH,
                      feature_psi=feature_psi, alerts=alerts[::-1][:200], reports=history[::-1][:60],
                      monitoring=monitoring)

    @app.get("/leads")
    def leads_page(request: Request) -> Response:
        from store.queries import search_leads

        q = request.query_params.get("q", "").strip()
        with reading() as session:
            results = search_leads(session, q) if q else []
        return render(request, "leads.html", q=q, results=results)

    @app.get("/leads/{crm_id}")
    def lead_page(request: Request, crm_id: str) -> Response:
        from scoring.explain import NOT_IN_CRM
        from web import plots

        with reading() as session:
            story = lead_story(session, crm_id, app_config)
        return render(request, "lead.html", story=story, chart=plots.score_history(story["history"]),
                      not_in_crm=NOT_IN_CRM)

    @app.get("/sync")
    def sync_page(request: Request) -> Response:
        from store.queries import quarantined_records, sync_streams

        with reading() as session:
            return render(request, "sync.html", streams=sync_streams(session),
                          quarantined=quarantined_records(session))

    return app


# ---------------------------------------------------------------------- helpers (plain functions)


_MEASURE_LABELS = {"performance": "accuracy"}  # the measures' names in the CLI's lines


def _auc_axis(points: list[tuple[datetime, float]], baseline: float | None) -> tuple[float, float] | None:
    """The AUC chart's value axis: around its points and baseline, never above 1 (an AUC cannot be)."""
    values = [v for _, v in points] + ([baseline] if baseline is not None else [])
    if not values:
        return None
    low, high = min(values), max(values)
    pad = max(0.02, 0.1 * (high - low))
    return max(0.0, low - pad), min(1.0, high + pad)


def _measures_with_why(metrics: dict[str, Any]) -> list[tuple[str, dict[str, Any], list[str]]]:
    """The latest run's measures with the CLI's lines about each (``describe_by_measure``; the
    measure's name, which the table shows, left off the first line)."""
    from scoring.monitoring.describe import describe_by_measure

    lines = describe_by_measure(metrics)
    out: list[tuple[str, dict[str, Any], list[str]]] = []
    for name, measure in sorted((metrics.get("measures") or {}).items()):
        label = _MEASURE_LABELS.get(name, name.replace("_", " "))
        why = list(lines.get(name) or [])
        if why and why[0].startswith(f"{label}: "):
            why[0] = why[0][len(label) + 2:]
        if not why and measure.get("reason"):
            why = [str(measure["reason"])]
        out.append((name, measure, why))
    return out


def _origin_host(origin: str) -> str:
    return origin.split("://", 1)[-1].split("/", 1)[0]


def _safe_next(path: str) -> str:
    """Only same-site paths after sign-in (no open redirect)."""
    if not path.startswith("/") or path.startswith("//") or path in ("/login", "/logout"):
        return "/"
    return path


def _fmt_threshold(value: Any) -> str:
    if value is None:
        return ""
    number = float(value)
    return f"{number:g}"


def _number(raw: str | None, what: str) -> float:
    if raw is None or not raw.strip():
        raise LeadscoreError(f"enter the {what} (a number) to get a suggestion")
    try:
        value = float(raw or "")
    except ValueError as exc:
        raise LeadscoreError(f"{what}: {raw!r} is not a number") from exc
    if not math.isfinite(value):
        raise LeadscoreError(f"{what}: {raw!r} is not a number")
    return value


def _policy_args(request: Request) -> tuple[str, dict[str, Any]]:
    """Mode and thresholds from ``?mode=score&A=80&B=60&C=35`` (capacity shares may end in %)."""
    from scoring.tiers import TierPolicyError

    q = request.query_params
    mode = q.get("mode", "score")
    if mode not in ("score", "likelihood", "capacity"):
        raise TierPolicyError(f"mode: unknown mode {mode!r} (use 'score', 'likelihood' or 'capacity')")
    missing = [t for t in ("A", "B", "C") if not q.get(t)]
    if missing:
        raise TierPolicyError(f"give A, B and C (missing {', '.join(missing)})")
    return mode, {t: str(q[t]).strip().rstrip("%") for t in ("A", "B", "C")}


def preview_payload(data: dict[str, Any]) -> dict[str, Any]:
    """The API's shape of :func:`scoring.tier_changes.preview`: per tier ``leads`` and ``conversion_rate``
    (recent labelled leads), plus ``routing_actions``: the actions the change would plan
    (``{"leads", "actions": {type: n}, "total"}``, :func:`scoring.pipeline.routing_preview`)."""
    tiers = {
        t: {"leads": row["leads"], "share": row["share"], "conversion_rate": row["recent_conversion_rate"],
            "recent_leads": row["recent_leads"]}
        for t, row in data["tiers"].items()
    }
    out = {"mode": data["mode"], "thresholds": data["thresholds"], "current_leads": data["current_leads"],
           "changes": data["changes"], "tiers": tiers, "routing_actions": _routing_with_warning(data.get("routing")),
           "recent": data.get("recent") or {}}
    if "score_cutoffs" in data:
        out["score_cutoffs"] = data["score_cutoffs"]
        out["empty_tiers"] = data.get("empty_tiers", {})
    return out


def _selection_note(mv: ModelVersion, families: Sequence[Mapping[str, Any]]) -> str | None:
    """How the champion's family was chosen, and, when another family has a higher test AUC, why
    that does not make it the better choice (the test part is measured once, after the choice)."""
    metric = str((mv.params or {}).get("selection_metric") or "auc")
    chosen = next((f for f in families if f["selected"]), None)
    if chosen is None:
        return None
    label = {"auc": "AUC", "pr_auc": "PR-AUC", "brier": "Brier score"}.get(metric, metric)
    value = chosen["validation"].get(metric)
    note = (f"{chosen['family']} was selected on its validation {label}"
            + (f" ({float(value):.3f})" if isinstance(value, int | float) else "")
            + "; the test columns were measured once, afterwards, on leads no choice looked at.")
    tests = [(f["test"].get("auc"), f["family"]) for f in families if isinstance(f["test"].get("auc"), int | float)]
    best = max(tests, default=None)
    mine = chosen["test"].get("auc")
    if best is not None and isinstance(mine, int | float) and best[0] > mine:
        note += (f" {best[1]} has the higher test AUC ({best[0]:.3f} against {float(mine):.3f}): choosing by test"
                 " would make the test AUC an optimistic estimate, so the choice stays with validation.")
    return note


def _held_words(held: str | None) -> str | None:
    """The saved-policy line's note on actions the routing's repeat guard held back, as `tiers set`
    prints it (None when none were)."""
    from connectors.routing import HELD_WORDS

    return f"{held} {HELD_WORDS}" if held and held.isdigit() and int(held) else None


def _routing_with_warning(routing: dict[str, Any] | None) -> dict[str, Any] | None:
    """The preview's routing counts, with the wording of its warning when assignments would take
    leads from the reps who own them (``reassigned_warning``) and of the actions the repeat guard
    would hold back (``held_words``), as `tiers preview` says them."""
    from scoring.pipeline import reassigned_from_users

    if not routing:
        return routing
    out = dict(routing)
    if routing.get("reassigned_from_users"):
        out["reassigned_warning"] = reassigned_from_users(int(routing["reassigned_from_users"]))
    if routing.get("held"):
        out["held_words"] = _held_words(str(routing["held"]))
    return out


def lead_story(session: Session, crm_id: str, config: AppConfig | None = None) -> dict[str, Any]:
    """Everything the lead page and ``/api/leads/{crm_id}`` show: explain + history + routing + feedback."""
    from scoring.feedback import feedback_words, lead_feedback
    from scoring.service import explain_lead, find_lead
    from store.queries import routing_actions, score_history

    try:
        lead = find_lead(session, crm_id)
    except LeadscoreError as exc:
        raise NotFound(str(exc)) from exc
    try:
        # The lead found, not a namesake; its rep feedback read as `leadscore explain` reads it.
        explained: dict[str, Any] = explain_lead(session, f"id:{lead.id}", config=config)
    except LeadscoreError:
        explained = {"lead_id": lead.id, "crm_id": lead.crm_id, "score": None, "tier": None, "reasons": [],
                     "model": None, "scored_at": None, "probability": None,
                     "rep_feedback": lead_feedback(session, lead, config)}
    explained.update({
        "email": lead.email, "company": lead.company, "title": lead.title, "status": lead.status,
        "name": " ".join(p for p in (lead.first_name, lead.last_name) if p) or None,
        "converted": lead.is_converted, "deleted": lead.is_deleted,
    })
    explained["history"] = score_history(session, lead.id)
    if "routing_actions" not in explained:  # a lead without a score: explain_lead said why, not what was routed
        explained["routing_actions"] = routing_actions(session, lead.id)
    said = feedback_words(explained["rep_feedback"])
    explained["feedback"] = [said] if said else []
    return explained
