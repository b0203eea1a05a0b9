"""Test settings: the real Postgres from scripts/postgres, fast password hashing."""

from config.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
Q_CLUSTER = {**Q_CLUSTER, "workers": 1, "poll": 0.1}  # noqa: F405
PREVIEWS_ROLLOUT_TIMEOUT = 60
