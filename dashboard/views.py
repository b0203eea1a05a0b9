"""Dashboard views: read through selectors, change through services, nothing else."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required, permission_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from dashboard.forms import ExtendForm, KillForm, ListFilterForm, LogsForm
from previews import reaper, reaper_cycle, selectors, services
from previews.gateways import errors
from previews.models import ActorKind, Preview

PAGE_SIZE = 50
REAPER_PAGE_SIZE = 100


def _actor(request: HttpRequest) -> services.Actor:
    return services.Actor(ActorKind.USER, request.user.get_username())


def _preview_or_404(preview_id: int) -> Preview:
    preview = selectors.preview_detail(preview_id)
    if preview is None:
        raise Http404("No such preview")
    return preview


@require_GET
@login_required
@permission_required("previews.view_preview", raise_exception=True)
def preview_list(request: HttpRequest) -> HttpResponse:
    form = ListFilterForm(request.GET)
    filters = form.cleaned_data if form.is_valid() else {}
    previews = selectors.dashboard_previews(
        repository=filters.get("repository", ""), status=filters.get("status", ""),
        author=filters.get("author", ""), search=filters.get("q", ""), sort=filters.get("sort") or "updated")
    page = Paginator(previews, PAGE_SIZE).get_page(filters.get("page") or 1)
    context = {"page": page, "form": form, "counts": selectors.dashboard_counts(), "now": timezone.now(),
               "query": request.GET.copy()}
    if request.htmx:
        return render(request, "dashboard/_preview_rows.html", context)
    context["choices"] = selectors.dashboard_filter_choices()
    return render(request, "dashboard/preview_list.html", context)


@require_GET
@login_required
@permission_required("previews.view_preview", raise_exception=True)
def preview_detail(request: HttpRequest, preview_id: int) -> HttpResponse:
    preview = _preview_or_404(preview_id)
    context = _detail_context(request, preview)
    if request.htmx:
        return render(request, "dashboard/_preview_live.html", context)
    return render(request, "dashboard/preview_detail.html", context)


@require_GET
@login_required
@permission_required("previews.view_preview", raise_exception=True)
def preview_logs(request: HttpRequest, preview_id: int) -> HttpResponse:
    """The last lines of one container's log, refreshed every few seconds while the page is open."""
    preview = _preview_or_404(preview_id)
    form = LogsForm(request.GET)
    if not form.is_valid():
        return render(request, "dashboard/preview_logs.html", {"preview": preview, "form": form}, status=400)
    data = form.cleaned_data
    text, error = selectors.preview_container_log(preview, data["pod"], data["container"], lines=data["lines"],
                                                  previous=data["previous"])
    context = {"preview": preview, "form": form, "log": text, "error": error, **data}
    if request.htmx:
        return render(request, "dashboard/_log.html", context)
    return render(request, "dashboard/preview_logs.html", context)


def _detail_context(request: HttpRequest, preview: Preview, **forms) -> dict:
    overview, cluster_error = selectors.preview_cluster_view(preview) if preview.is_live else (None, "")
    return {
        "preview": preview, "events": selectors.preview_timeline(preview), "overview": overview,
        "cost": selectors.preview_cost(preview) if preview.is_live else None,
        "cluster_error": cluster_error, "now": timezone.now(),
        "extend_form": forms.get("extend_form") or ExtendForm(),
        "kill_form": forms.get("kill_form") or KillForm(preview=preview),
    }


@require_POST
@login_required
@permission_required("previews.extend_preview", raise_exception=True)
def preview_extend(request: HttpRequest, preview_id: int) -> HttpResponse:
    preview = _preview_or_404(preview_id)
    form = ExtendForm(request.POST)
    if form.is_valid():
        try:
            services.preview_extend(preview=preview, hours=form.cleaned_data["extend_by"],
                                    reason=form.cleaned_data["reason"], actor=_actor(request))
        except ValidationError as exc:
            form.add_error(None, exc.messages)
        except services.PreviewConflict as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Extended by {form.cleaned_data['extend_by']} hours.")
            return redirect("dashboard:preview_detail", preview_id=preview.pk)
    return render(request, "dashboard/preview_detail.html", _detail_context(request, preview, extend_form=form),
                  status=422)


@require_POST
@login_required
@permission_required("previews.pin_preview", raise_exception=True)
def preview_pin(request: HttpRequest, preview_id: int) -> HttpResponse:
    preview = _preview_or_404(preview_id)
    pinned = request.POST.get("pinned") == "true"
    services.preview_pin(preview=preview, pinned=pinned, actor=_actor(request))
    messages.success(request, "Pinned: the reaper will not expire it." if pinned else "Unpinned.")
    return redirect("dashboard:preview_detail", preview_id=preview.pk)


def _preview_action(permission: str, act: Callable[[HttpRequest, Preview], object],
                    success: Callable[[Preview], str]):
    """A one-click action on a preview (a POST with nothing to fill in): `act` through the services, its
    success, or the conflict that refused it, as a message; back to the preview's page."""

    @require_POST
    @login_required
    @permission_required(permission, raise_exception=True)
    def view(request: HttpRequest, preview_id: int) -> HttpResponse:
        preview = _preview_or_404(preview_id)
        try:
            act(request, preview)
        except services.PreviewConflict as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, success(preview))
        return redirect("dashboard:preview_detail", preview_id=preview.pk)

    return view


preview_redeploy = _preview_action(
    "previews.redeploy_preview", lambda request, preview: services.preview_redeploy(preview=preview,
                                                                                    actor=_actor(request)),
    lambda preview: f"Redeploying {preview.head_sha[:7]}.")
# Waking is a deploy of the same commit, hence the redeploy permission.
preview_wake = _preview_action(
    "previews.redeploy_preview", lambda request, preview: services.preview_wake(preview=preview, actor=_actor(request)),
    lambda preview: "Waking up: restoring its workloads.")
preview_sleep = _preview_action(
    "previews.redeploy_preview", lambda request, preview: services.preview_sleep(
        preview=preview, actor=_actor(request),
        reason=f"Put to sleep from the dashboard by {request.user.get_username()}"),
    lambda preview: "Going to sleep: scaling its workloads to zero.")
preview_reset_data = _preview_action(
    "previews.reset_data_preview", lambda request, preview: services.preview_reset_data(preview=preview,
                                                                                        actor=_actor(request)),
    lambda preview: "Resetting the data; the preview deploys again.")


@require_GET
@login_required
@permission_required("previews.view_preview", raise_exception=True)
def costs(request: HttpRequest) -> HttpResponse:
    """Requested CPU and memory per repository and preview, from the cluster, and what sleeping saves."""
    error, rows = "", []
    try:
        rows = selectors.all_repository_costs()
    except errors.GatewayError as exc:
        error = f"The cluster could not be read: {exc}"
    return render(request, "dashboard/costs.html", {"repositories": rows, "error": error})


@require_POST
@login_required
@permission_required("previews.kill_preview", raise_exception=True)
def preview_kill(request: HttpRequest, preview_id: int) -> HttpResponse:
    preview = _preview_or_404(preview_id)
    form = KillForm(request.POST, preview=preview)
    if not form.is_valid():
        return render(request, "dashboard/preview_detail.html", _detail_context(request, preview, kill_form=form),
                      status=422)
    services.preview_destroy(preview=preview, actor=_actor(request),
                             reason=f"Deleted from the dashboard by {request.user.get_username()}")
    messages.success(request, f"Deleting namespace {preview.namespace}.")
    return redirect("dashboard:preview_detail", preview_id=preview.pk)


@require_GET
@login_required
@permission_required("previews.view_preview", raise_exception=True)
def reaper_plan(request: HttpRequest) -> HttpResponse:
    """The next cycle's plan: the summary first, then the deletions, the alerts, other actions; keeps collapsed."""
    error = ""
    plan = snapshot = None
    context: dict = {"query": request.GET.copy()}
    try:
        plan, snapshot = reaper_cycle.preview_plan()
    except errors.GatewayError as exc:
        error = f"The cluster could not be read, so there is no plan: {exc}"
    if plan is not None:
        deletions = sorted(plan.deletions, key=reaper.urgency)
        keeps = [d for d in plan.decisions if d.action == reaper.KEEP]
        context.update(
            summary=[(action, sum(reasons.values()), list(reasons.items()))
                     for action, reasons in plan.counts().items()],
            deletions=Paginator(deletions, REAPER_PAGE_SIZE).get_page(request.GET.get("deletions_page") or 1),
            others=[d for d in plan.decisions if d.action not in (reaper.DELETE, reaper.KEEP)],
            keeps=Paginator(keeps, REAPER_PAGE_SIZE).get_page(request.GET.get("keep_page") or 1),
            keeps_open="keep_page" in request.GET)
    config = reaper_cycle.reaper_settings()
    context.update(plan=plan, snapshot=snapshot, error=error, settings=config,
                   per_cycle=config.deletions_per_minute * config.burst_minutes,
                   grace_minutes=int(config.grace_period.total_seconds() // 60),
                   clock_tolerance_minutes=int(config.clock_tolerance.total_seconds() // 60))
    return render(request, "dashboard/reaper.html", context)


class ThrottledLoginView(auth_views.LoginView):
    """The login page; while logins are throttled (previews.login_throttle) it answers 429 with Retry-After."""

    def form_invalid(self, form):
        response = super().form_invalid(form)
        seconds = getattr(self.request, "login_throttled", None)
        if seconds:
            response.status_code = 429
            response["Retry-After"] = str(seconds)
        return response
