from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from previews import selectors


@login_required
def preview_list(request):
    return render(request, "dashboard/preview_list.html", {"previews": selectors.preview_list_live()})
