from __future__ import annotations

from django import forms

from previews.gateways.kube.views import MAX_LOG_LINES
from previews.models import Preview
from previews.validators import DNS_LABEL_RE, DNS_SUBDOMAIN_RE, MAX_TTL_HOURS

DEFAULT_LOG_LINES = 100

EXTEND_CHOICES = [("24", "+24 hours"), ("72", "+72 hours"), ("custom", "Custom")]


class ExtendForm(forms.Form):
    choice = forms.ChoiceField(choices=EXTEND_CHOICES, initial="24", widget=forms.RadioSelect)
    hours = forms.IntegerField(required=False, label="Custom hours", min_value=1, max_value=MAX_TTL_HOURS,
                               error_messages={"min_value": "Hours must be at least 1.",
                                               "max_value": f"Hours must be at most {MAX_TTL_HOURS}."})
    reason = forms.CharField(max_length=500, help_text="Why it is needed for longer; shown on the timeline.",
                             error_messages={"required": "Say why the preview is needed for longer."})

    def clean(self):
        data = super().clean()
        choice = data.get("choice")
        if choice == "custom":
            hours = data.get("hours")
            if hours is None:
                if "hours" not in self.errors:
                    self.add_error("hours", "Give the number of hours.")
            else:
                data["extend_by"] = hours
        elif choice:
            data["extend_by"] = int(choice)
        return data


class LogsForm(forms.Form):
    """Which container's log the logs view shows, and how much of it."""

    pod = forms.RegexField(regex=rf"^{DNS_SUBDOMAIN_RE.pattern}$", max_length=253,
                           error_messages={"invalid": "Not a pod name (a lower-case DNS subdomain)."})
    container = forms.RegexField(regex=DNS_LABEL_RE, max_length=63,
                                 error_messages={"invalid": "Not a container name (a lower-case DNS label)."})
    lines = forms.IntegerField(required=False, min_value=1, max_value=MAX_LOG_LINES,
                               error_messages={"min_value": "Show at least 1 line.",
                                               "max_value": f"Show at most {MAX_LOG_LINES} lines."})
    previous = forms.BooleanField(required=False, label="The run before the last restart")

    def clean_lines(self) -> int:
        return self.cleaned_data.get("lines") or DEFAULT_LOG_LINES


class KillForm(forms.Form):
    confirm = forms.CharField(label="Type the namespace to confirm")

    def __init__(self, *args, preview: Preview, **kwargs):
        super().__init__(*args, **kwargs)
        self.preview = preview

    def clean_confirm(self) -> str:
        value = self.cleaned_data["confirm"].strip()
        if value != self.preview.namespace:
            raise forms.ValidationError(f"Type {self.preview.namespace} exactly to delete this preview.")
        return value


class ListFilterForm(forms.Form):
    repository = forms.CharField(required=False)
    status = forms.ChoiceField(required=False, choices=[("", "Any status")] + [
        (s, s.capitalize()) for s in Preview.LIVE_STATUSES])
    author = forms.CharField(required=False)
    q = forms.CharField(required=False, max_length=100)
    sort = forms.ChoiceField(required=False, choices=[("updated", "Recently updated"), ("created", "Newest"),
                                                      ("expires", "Expiring first"), ("pr", "Repository and PR"),
                                                      ("status", "Status")])
    page = forms.IntegerField(required=False, min_value=1)
