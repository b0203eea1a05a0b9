from __future__ import annotations

from django import forms

from previews.models import Preview
from previews.validators import MAX_TTL_HOURS

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
