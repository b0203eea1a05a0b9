from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils.cache import add_never_cache_headers

from previews import services
from previews.gateways import errors, github
from previews.models import ApiToken, Preview, PreviewEvent, Repository


@admin.register(Repository)
class RepositoryAdmin(admin.ModelAdmin):
    list_display = ["__str__", "base_domain", "namespace_prefix", "routing", "default_ttl_hours",
                    "max_live_previews"]
    search_fields = ["owner", "name"]

    def save_model(self, request, obj, form, change):
        # GitHub Actions OIDC maps tokens by GitHub's immutable ids: fill them in when GitHub can tell us.
        if obj.github_repository_id is None and github.is_configured():
            try:
                obj.github_repository_id, obj.github_owner_id = github.repository_ids(obj.full_name)
                messages.info(request, f"GitHub ids of {obj} filled in: repository {obj.github_repository_id}, "
                                       f"owner {obj.github_owner_id}.")
            except errors.GatewayError as exc:
                messages.warning(request, f"GitHub ids not filled in (GitHub Actions OIDC stays off): {exc}")
        super().save_model(request, obj, form, change)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "repository", "prefix", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["repository"]
    readonly_fields = ["prefix", "created_at", "created_by", "last_used_at"]
    fields = ["name", "repository", "prefix", "created_at", "created_by", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        token, plaintext = services.token_create(
            name=obj.name, repository=obj.repository, created_by=request.user
        )
        obj.pk, obj.prefix, obj.token_hash = token.pk, token.prefix, token.token_hash
        # Kept on this request only: shown in this response, never in a message (a cookie) or a redirect.
        request._new_token_plaintext = plaintext

    def response_add(self, request, obj, post_url_continue=None):
        plaintext = getattr(request, "_new_token_plaintext", None)
        if plaintext is None:
            return super().response_add(request, obj, post_url_continue)
        response = TemplateResponse(request, "admin/previews/token_created.html", {
            **self.admin_site.each_context(request), "token": obj, "plaintext": plaintext,
            "title": "Token created"})
        add_never_cache_headers(response)
        return response

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset):
        for token in queryset:
            services.token_revoke(token)


class PreviewEventInline(admin.TabularInline):
    model = PreviewEvent
    extra = 0
    can_delete = False
    readonly_fields = ["created_at", "actor_kind", "actor", "action", "message", "details", "generation"]


@admin.register(Preview)
class PreviewAdmin(admin.ModelAdmin):
    list_display = ["__str__", "namespace", "status", "desired", "expires_at", "updated_at"]
    list_filter = ["status", "desired", "repository"]
    search_fields = ["namespace", "title", "author"]
    inlines = [PreviewEventInline]

    def has_change_permission(self, request, obj=None):
        # Desired state changes go through services (API or dashboard) so that
        # events are written and tasks enqueued; the admin only reads previews.
        return False
