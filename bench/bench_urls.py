"""Bench-only URLconf: every route of config.urls, plus `bench/trivial`, a baseline JSON view.

Served by the same gunicorn and through the same middleware as the API, so that bench/api_load.py can
compare the API with the least a Django JSON view costs on that server.
"""

from django.http import HttpRequest, JsonResponse
from django.urls import path

from config.urls import urlpatterns as project_urlpatterns


def trivial(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


urlpatterns = [path("bench/trivial", trivial, name="bench-trivial"), *project_urlpatterns]
