"""REST API views: validate input, call services/selectors, serialize output. Nothing else."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import exceptions, generics, serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from previews import oidc, selectors, services, validators
from previews.api import waits
from previews.api.auth import OidcUser, oidc_failed
from previews.api.errors import InvalidValues, problem
from previews.api.serializers import (
    ExtendSerializer,
    PreviewSerializer,
    PreviewUpsertSerializer,
    ProblemSerializer,
    RepositoryCostSerializer,
    common_upsert_data,
    preview_representation,
)
from previews.gateways import errors
from previews.models import ActorKind, Preview, Repository

PATH_PARAMETERS = [
    OpenApiParameter("owner", {"type": "string", "pattern": r"^[A-Za-z0-9-]{1,39}$"}, OpenApiParameter.PATH),
    OpenApiParameter("repo", {"type": "string", "pattern": r"^[A-Za-z0-9._-]{1,100}$"}, OpenApiParameter.PATH),
    OpenApiParameter(
        "pr",
        {"type": "integer", "minimum": 1, "maximum": validators.MAX_PR_NUMBER},
        OpenApiParameter.PATH,
        description="Pull request number",
    ),
]
ERRORS = {(code, "application/problem+json"): ProblemSerializer
          for code in (400, 401, 403, 404, 409, 413, 415, 422, 503)}
WAIT_ERRORS = {**ERRORS, (429, "application/problem+json"): ProblemSerializer}


def _pr_number(raw: str) -> int:
    if not raw.isdecimal() or not raw.isascii():
        raise InvalidValues([{"field": "pr", "message": f"{raw!r} is not a pull request number"}])
    number = int(raw)
    try:
        validators.validate_pr_number(number)
    except ValidationError as exc:
        raise InvalidValues([{"field": "pr", "message": exc.messages[0]}]) from None
    return number


class ClaimRefused(exceptions.PermissionDenied):
    """A valid GitHub Actions token whose claims do not allow this request: the claim is named."""

    def __init__(self, exc: oidc.ClaimRefused):
        super().__init__(f"GitHub Actions token refused: {exc}")
        self.errors = [{"field": f"token.{exc.claim}", "message": exc.message}]


class GitHubUnavailable(exceptions.APIException):
    status_code = 503
    default_detail = "GitHub cannot be asked right now"


# The operation types a GitHub Actions token may each perform once (see docs/oidc.md).
OIDC_OPERATIONS = {"PUT": "deploy", "GET": "read", "DELETE": "delete", "POST": "extend"}


class RepositoryScopedView(APIView):
    """Resolves {owner}/{repo}, checking the caller may act on it (403) and that it exists (404).

    A GitHub Actions token is checked claim by claim against the repository and the PR in the path
    (`repository`), against the deployed commit (`admit`, for PUT) and used once per operation.
    """

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        length = request.META.get("CONTENT_LENGTH") or "0"
        if (
            request.method in ("PUT", "POST")
            and length not in ("", "0")
            and request.content_type.split(";")[0].strip().lower() != "application/json"
        ):
            raise exceptions.UnsupportedMediaType(
                request.content_type or "(none)", detail="send the body as application/json"
            )

    def perform_content_negotiation(self, request, force=False):
        """DRF's answer without its Accept parsing for what CI sends (no Accept, */* or application/json, no
        ?format=): the one renderer, as application/json, which is what DRF's negotiation picks for these."""
        accept = request.META.get("HTTP_ACCEPT")
        if (accept is None or accept in ("*/*", "application/json")) and len(self.renderer_classes) == 1 \
                and "format" not in request._request.GET and not self.format_kwarg:
            renderer = self.renderer_classes[0]()
            return renderer, renderer.media_type
        return super().perform_content_negotiation(request, force)

    def repository(self, request, owner: str, repo: str, pr: int | None = None) -> Repository:
        if isinstance(request.user, OidcUser):
            try:
                repository = oidc.authorize(request.user.claims, request.user.repository, owner, repo, pr)
                oidc.check_fork(repository, pr, request.user.claims)
                return repository
            except oidc.ClaimRefused as exc:
                raise ClaimRefused(exc) from None
        self.check_scope(request, owner, repo)
        repository = selectors.repository_get(owner, repo)
        if repository is None:
            raise _repository_not_found(owner, repo)
        return repository

    @staticmethod
    def check_scope(request, owner: str, repo: str) -> None:
        """An API token scoped to one repository acts on that one only (403)."""
        if not request.user.may_act_on(owner, repo):
            raise exceptions.PermissionDenied(f"this token may only act on {request.user.token.repository}")

    def preview(self, repository: Repository, pr: int) -> Preview:
        preview = selectors.preview_get(repository, pr)
        if preview is None:
            raise exceptions.NotFound(f"{repository} has no preview for PR #{pr}")
        return preview

    def preview_by_name(self, request, owner: str, repo: str, pr: int) -> Preview:
        """`repository` then `admit` then `preview`, the same checks in the same order; for an API token, in one
        query (the preview with its repository) unless it finds none."""
        if isinstance(request.user, OidcUser):
            repository = self.repository(request, owner, repo, pr)
            self.admit(request)
            return self.preview(repository, pr)
        self.check_scope(request, owner, repo)
        preview = selectors.preview_by_name(owner, repo, pr)
        if preview is None:
            repository = self.repository(request, owner, repo, pr)  # 404 when it is not configured
            raise exceptions.NotFound(f"{repository} has no preview for PR #{pr}")
        return preview

    def admit(self, request, head_sha: str | None = None) -> None:
        """For a GitHub Actions token: the commit rule (deploys) and the one-use-per-operation rule."""
        if not isinstance(request.user, OidcUser):
            return
        claims = request.user.claims
        try:
            if head_sha is not None:
                oidc.check_sha(claims, head_sha)
            oidc.remember_use(claims, OIDC_OPERATIONS[request.method])
        except oidc.ClaimRefused as exc:
            raise ClaimRefused(exc) from None
        except oidc.OidcError as exc:
            raise oidc_failed(exc) from None
        except errors.GatewayError as exc:
            failure = GitHubUnavailable(f"cannot check the token's sha claim with GitHub: {exc}")
            failure.wait = exc.retry_after or 30
            raise failure from None

    def actor(self, request) -> services.Actor:
        if isinstance(request.user, OidcUser):
            claims = request.user.claims
            return services.Actor(ActorKind.WORKFLOW, claims.actor_name, url=claims.run_url)
        return services.Actor(ActorKind.TOKEN, request.user.token.name)


def _repository_not_found(owner: str, repo: str) -> exceptions.NotFound:
    return exceptions.NotFound(f"repository {owner}/{repo} is not configured in this service")


class PreviewDetailView(RepositoryScopedView):
    @extend_schema(
        parameters=PATH_PARAMETERS,
        request=PreviewUpsertSerializer,
        responses={200: PreviewSerializer, 201: PreviewSerializer, **WAIT_ERRORS},
        summary="Create or update a PR's preview",
        description="Idempotent: the same head_sha, images and manifests again start no new deploy. 429 (with "
                    "Retry-After) when the repository's PUTs carrying manifests exceed its "
                    "`manifest_puts_per_minute`.",
    )
    def put(self, request, owner: str, repo: str, pr: str):
        number = _pr_number(pr)
        repository = None
        data = None
        if not isinstance(request.user, OidcUser):
            # An API token: the scope (403), then for a common body CI's usual idempotent request in one statement
            # that also finds the repository (404); otherwise the path below, with the repository found.
            self.check_scope(request, owner, repo)
            data = common_upsert_data(request.data)
            if data is not None:
                touched = services.preview_touch_by_name(owner, repo, number, self._preview_request(data))
                if touched.repository_id is None:
                    raise _repository_not_found(owner, repo)
                if touched.preview is not None:
                    body = preview_representation(touched.preview)
                    body["deploy_enqueued"] = False
                    return Response(body, status=200)
                repository = selectors.repository_by_id(touched.repository_id)
                if repository is None:  # deleted in between
                    raise _repository_not_found(owner, repo)
        if repository is None:
            repository = self.repository(request, owner, repo, number)
        if data is None:
            serializer = PreviewUpsertSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            data = serializer.validated_data
        self.admit(request, head_sha=data["head_sha"])
        result = services.preview_upsert(
            repository=repository,
            pr_number=number,
            actor=self.actor(request),
            # CI asking is not enough: the repository's opt-in policy (label, drafts) decides, as for webhooks.
            check_opt_in=True,
            request=self._preview_request(data),
        )
        body = preview_representation(result.preview)
        body["deploy_enqueued"] = result.deploy_enqueued
        return Response(body, status=201 if result.created else 200)

    @staticmethod
    def _preview_request(data: dict) -> services.PreviewRequest:
        return services.PreviewRequest(
            head_sha=data["head_sha"],
            images=data["image_references"],
            manifests=data.get("manifests", ""),
            ttl_hours=data.get("ttl_hours"),
            title=data.get("title", ""),
            author=data.get("author", ""),
        )

    @extend_schema(
        parameters=[
            *PATH_PARAMETERS,
            OpenApiParameter(
                "wait",
                {"type": "integer", "minimum": 0, "maximum": 120},
                description="Hold up to N seconds (≤ 120) until the preview is ready, failed or deleted",
            ),
        ],
        responses={200: PreviewSerializer, **WAIT_ERRORS},
        summary="Read a PR's preview",
        description="With `wait`, 429 (with Retry-After) when the token or the server already holds its maximum "
                    "of waiting requests.",
    )
    def get(self, request, owner: str, repo: str, pr: str):
        number = _pr_number(pr)
        preview = self.preview_by_name(request, owner, repo, number)
        wait = request.query_params.get("wait")
        if wait is not None:
            if not wait.isdecimal() or not 0 <= int(wait) <= settings.PREVIEWS_API_MAX_WAIT:
                raise InvalidValues(
                    [
                        {
                            "field": "wait",
                            "message": f"wait must be a whole number of seconds from 0 "
                            f"to {settings.PREVIEWS_API_MAX_WAIT}",
                        }
                    ]
                )
            if int(wait) > 0:
                with waits.SLOTS.hold(request.user.wait_key, settings.PREVIEWS_API_WAITS_PER_TOKEN,
                                      settings.PREVIEWS_API_WAITS_TOTAL) as refused:
                    if refused:
                        raise exceptions.Throttled(wait=waits.RETRY_AFTER_SECONDS,
                                                   detail=f"{refused}; read without wait, or retry later")
                    preview = selectors.preview_wait(preview, int(wait))
        return Response(preview_representation(preview))

    @extend_schema(
        parameters=PATH_PARAMETERS,
        request=None,
        responses={202: PreviewSerializer, **ERRORS},
        summary="Delete a PR's preview",
        description="Idempotent: deleting again answers 202 as well.",
    )
    def delete(self, request, owner: str, repo: str, pr: str):
        number = _pr_number(pr)
        repository = self.repository(request, owner, repo, number)
        self.admit(request)
        preview = self.preview(repository, number)
        preview = services.preview_destroy(preview=preview, actor=self.actor(request), reason="deleted through the API")
        return Response(PreviewSerializer(preview).data, status=202)


class PreviewActionView(RepositoryScopedView):
    """A POST that acts on one preview (extend, wake, sleep, reset its data), in one order for all of them:
    the repository (403/404), the preview (404), the request body (422), then the GitHub Actions token's
    one use (`admit`), so a refused request never spends it; then the service call."""

    status_code = 202

    def validated(self, request) -> dict:
        """The request body's values (none by default)."""
        return {}

    def act(self, preview: Preview, actor: services.Actor, **values) -> Preview:
        raise NotImplementedError

    def post(self, request, owner: str, repo: str, pr: str):
        number = _pr_number(pr)
        preview = self.preview(self.repository(request, owner, repo, number), number)
        values = self.validated(request)
        self.admit(request)
        preview = self.act(preview, self.actor(request), **values)
        return Response(PreviewSerializer(preview).data, status=self.status_code)


def action_schema(summary: str, description: str, request=None, status: int = 202):
    """The OpenAPI description of one preview action (a POST answering with the preview)."""
    return extend_schema_view(post=extend_schema(
        parameters=PATH_PARAMETERS, request=request, responses={status: PreviewSerializer, **ERRORS},
        summary=summary, description=description))


@action_schema("Extend a preview's expiry", "Capped by the repository's maximum TTL.",
               request=ExtendSerializer, status=200)
class PreviewExtendView(PreviewActionView):
    status_code = 200

    def validated(self, request) -> dict:
        serializer = ExtendSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return {"hours": serializer.validated_data["hours"], "reason": serializer.validated_data["reason"]}

    def act(self, preview: Preview, actor: services.Actor, **values) -> Preview:
        return services.preview_extend(preview=preview, actor=actor, **values)


@action_schema("Wake a sleeping preview",
               "Restores its workloads' replicas through a deploy; `GET ?wait=N` then waits for ready. "
               "For a preview that is awake it only restarts the idle clock. 409 while it is being deleted.")
class PreviewWakeView(PreviewActionView):
    def act(self, preview: Preview, actor: services.Actor, **values) -> Preview:
        return services.preview_wake(preview=preview, actor=actor)


@action_schema("Put a preview to sleep now",
               "Scales every Deployment and StatefulSet to zero. 409 unless it is ready, failed or asleep.")
class PreviewSleepView(PreviewActionView):
    def act(self, preview: Preview, actor: services.Actor, **values) -> Preview:
        return services.preview_sleep(preview=preview, actor=actor, reason="requested through the API")


class RepositoryCostView(RepositoryScopedView):
    @extend_schema(
        parameters=PATH_PARAMETERS[:2],
        responses={200: RepositoryCostSerializer, **ERRORS, (503, "application/problem+json"): ProblemSerializer},
        summary="What a repository's previews request, and what sleeping saves",
        description="From the cluster: each live preview's pod template requests times replicas, and the total.",
    )
    def get(self, request, owner: str, repo: str):
        repository = self.repository(request, owner, repo)
        self.admit(request)
        try:
            costs = selectors.repository_costs(repository)
        except errors.GatewayError as exc:
            return Response(problem(503, f"the cluster could not be read: {exc}"), status=503,
                            content_type="application/problem+json")
        return Response(costs)


@action_schema("Reset a preview's data",
               "Database mode: copied again from the template; schema mode: recreated empty; in-namespace: "
               "the seed runs again. The migrate Job runs again and the preview is ready once it completed. "
               "409 when the repository has no data mode or the preview is being deleted.")
class PreviewResetDataView(PreviewActionView):
    def act(self, preview: Preview, actor: services.Actor, **values) -> Preview:
        return services.preview_reset_data(preview=preview, actor=actor)


class PreviewPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_page_number(self, request, paginator):
        raw = request.query_params.get(self.page_query_param, "1")
        if not raw.isdecimal() or int(raw) < 1:
            raise InvalidValues([{"field": "page", "message": "page must be a whole number from 1"}])
        return raw


class PreviewListFilters(serializers.Serializer):
    repository = serializers.CharField(required=False, help_text="owner/name")
    status = serializers.ChoiceField(choices=Preview.Status.choices, required=False)
    page = serializers.IntegerField(required=False, min_value=1)
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=200)


class PreviewListView(generics.ListAPIView):
    serializer_class = PreviewSerializer
    pagination_class = PreviewPagination

    @extend_schema(
        parameters=[PreviewListFilters],
        responses={200: PreviewSerializer(many=True), **ERRORS},
        summary="List previews",
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        if isinstance(self.request.user, OidcUser):
            raise exceptions.PermissionDenied("a GitHub Actions token acts only on its own pull request's preview; "
                                              "list previews with an API token")
        filters = PreviewListFilters(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        repository = None
        if "repository" in filters.validated_data:
            owner, _, name = filters.validated_data["repository"].partition("/")
            if not self.request.user.may_act_on(owner, name):
                raise exceptions.PermissionDenied(f"this token may only read {self.request.user.token.repository}")
            repository = selectors.repository_get(owner, name)
            if repository is None:
                raise exceptions.NotFound(f"repository {filters.validated_data['repository']} is not configured")
        elif self.request.user.token.repository is not None:
            repository = self.request.user.token.repository
        return selectors.preview_list(repository=repository, status=filters.validated_data.get("status"))
