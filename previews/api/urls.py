from django.urls import path

from previews.api import views, webhook

urlpatterns = [
    path("repos/<str:owner>/<str:repo>/previews/<str:pr>", views.PreviewDetailView.as_view(), name="preview-detail"),
    path("repos/<str:owner>/<str:repo>/previews/<str:pr>/extend", views.PreviewExtendView.as_view(),
         name="preview-extend"),
    path("repos/<str:owner>/<str:repo>/previews/<str:pr>/wake", views.PreviewWakeView.as_view(), name="preview-wake"),
    path("repos/<str:owner>/<str:repo>/previews/<str:pr>/sleep", views.PreviewSleepView.as_view(),
         name="preview-sleep"),
    path("repos/<str:owner>/<str:repo>/costs", views.RepositoryCostView.as_view(), name="repository-costs"),
    path("repos/<str:owner>/<str:repo>/previews/<str:pr>/reset-data", views.PreviewResetDataView.as_view(),
         name="preview-reset-data"),
    path("previews", views.PreviewListView.as_view(), name="preview-list"),
    path("github/webhook", webhook.github_webhook, name="github-webhook"),
]
