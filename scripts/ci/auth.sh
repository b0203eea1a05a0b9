# shellcheck shell=bash
# Sourced by preview-deploy and preview-delete: the bearer token for one call to the preview service.
#
# With the PREVIEWS_TOKEN secret set, that static token is used (other CI systems, or a repository
# not yet set up for OIDC). Without it, a fresh GitHub Actions OIDC token is requested for every
# call: the job needs `permissions: id-token: write`, and the service accepts each token once per
# kind of call (deploy, read, delete, extend). The audience is PREVIEWS_AUDIENCE, by default the
# service's URL (PREVIEWS_URL without a trailing slash): it must equal the service's
# PREVIEWS_OIDC_AUDIENCE.
previews_bearer_token() {
  if [ -n "${PREVIEWS_TOKEN:-}" ]; then
    printf '%s' "$PREVIEWS_TOKEN"
    return 0
  fi
  if [ -z "${ACTIONS_ID_TOKEN_REQUEST_URL:-}" ] || [ -z "${ACTIONS_ID_TOKEN_REQUEST_TOKEN:-}" ]; then
    echo "::error::no PREVIEWS_TOKEN secret and no GitHub Actions OIDC token: give the job 'permissions: id-token: write' (pull requests from forks get neither)" >&2
    return 1
  fi
  local audience token
  audience=$(jq -rn --arg a "${PREVIEWS_AUDIENCE:-${PREVIEWS_URL%/}}" '$a|@uri')
  token=$(curl -sS --fail -H "Authorization: bearer ${ACTIONS_ID_TOKEN_REQUEST_TOKEN}" \
    "${ACTIONS_ID_TOKEN_REQUEST_URL}&audience=${audience}" | jq -er .value) || {
    echo "::error::requesting a GitHub Actions OIDC token failed" >&2
    return 1
  }
  printf '%s' "$token"
}
