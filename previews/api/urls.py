from django.urls import path

from previews.api import views

urlpatterns = [
    path("repos/<str:owner>/<str:repo>/previews/<str:pr>", views.PreviewDetailView.as_view(), name="preview-detail"),
    path("repos/<str:owner>/<str:repo>/previews/<str:pr>/extend", views.PreviewExtendView.as_view(),
         name="preview-extend"),
    path("repos/<str:owner>/<str:repo>/previews/<str:pr>/reset-data", views.PreviewResetDataView.as_view(),
         name="preview-reset-data"),
    path("previews", views.PreviewListView.as_view(), name="preview-list"),
    path("github/webhook", views.github_webhook, name="github-webhook"),
]
