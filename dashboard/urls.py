from django.contrib.auth import views as auth_views
from django.urls import path

from dashboard import views

app_name = "dashboard"
urlpatterns = [
    path("", views.preview_list, name="preview_list"),
    path("previews/<int:preview_id>/", views.preview_detail, name="preview_detail"),
    path("previews/<int:preview_id>/extend", views.preview_extend, name="preview_extend"),
    path("previews/<int:preview_id>/pin", views.preview_pin, name="preview_pin"),
    path("previews/<int:preview_id>/redeploy", views.preview_redeploy, name="preview_redeploy"),
    path("previews/<int:preview_id>/kill", views.preview_kill, name="preview_kill"),
    path("previews/<int:preview_id>/logs", views.preview_logs, name="preview_logs"),
    path("previews/<int:preview_id>/wake", views.preview_wake, name="preview_wake"),
    path("previews/<int:preview_id>/sleep", views.preview_sleep, name="preview_sleep"),
    path("costs/", views.costs, name="costs"),
    path("previews/<int:preview_id>/reset-data", views.preview_reset_data, name="preview_reset_data"),
    path("reaper/", views.reaper_plan, name="reaper"),
    path("accounts/login/", views.ThrottledLoginView.as_view(template_name="dashboard/login.html"), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
]
