"""PreviewEvent.action checked by the database; 0013 carried the rows that did not fit."""

from importlib import import_module

from django.db import migrations, models

ACTIONS = import_module("previews.migrations.0013_pull_request_record").ACTIONS


class Migration(migrations.Migration):

    dependencies = [
        ("previews", "0013_pull_request_record"),
    ]

    operations = [
        migrations.AddConstraint(
            model_name="previewevent",
            constraint=models.CheckConstraint(condition=models.Q(("action__in", ACTIONS)), name="event_action_valid"),
        ),
    ]
