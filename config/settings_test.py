"""Test settings: the real Postgres from scripts/postgres, fast password hashing."""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key")

from config.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
Q_CLUSTER = {**Q_CLUSTER, "workers": 2, "poll": 0.1}  # noqa: F405
PREVIEWS_ROLLOUT_TIMEOUT = int(os.environ.get("PREVIEWS_ROLLOUT_TIMEOUT", "60"))
PREVIEWS_FAIL_FAST_SECONDS = int(os.environ.get("PREVIEWS_FAIL_FAST_SECONDS", "10"))
STATIC_ROOT = None  # tests serve static files from the apps (WhiteNoise finders), no collectstatic
