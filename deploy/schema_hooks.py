"""`make test-schema`: schemathesis' positive_data_acceptance, where the
answer also depends on what the database holds.

positive_data_acceptance fails any refusal of a request the document calls
valid, except the statuses that say "not now" (404, 409, ...). Two of the
contract's refusals depend on the resource's state and are 400 by the SPEC,
and no schema can say when they happen:
  - POST /admin/v1/users/{name}/credit {"add": N}: 400 `invalid_credit` when
    the balance plus N would leave 0..=i64::MAX (below 0, or an overflow);
  - POST /admin/v1/users/{name}/keys and .../rotate: 400 `too_many_keys` when
    the user already has 20 working keys.
This check replaces positive_data_acceptance (excluded on the command line)
and runs it on every answer, except that such a 400 passes only once the
state is read back and shown to justify it: the user's balance, or their
working keys. A 400 the state does not explain (an `add` of 5 on a balance
of 10 refused) still fails, under this check's name.

Loaded with SCHEMATHESIS_HOOKS=deploy/schema_hooks.py; the run uses one
worker, so nothing changes the state between the answer and the read-back.
"""

import json
import urllib.parse
import urllib.request

import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance

I64_MAX = 2**63 - 1
MAX_KEYS = 20
CREDIT = "POST /admin/v1/users/{name}/credit"
KEY_MAKERS = ("POST /admin/v1/users/{name}/keys", "POST /admin/v1/users/{name}/rotate")


def _read_back(response, path):
    """GET `path` on the server that answered, with the same credentials."""
    sent = urllib.parse.urlsplit(response.request.url)
    request = urllib.request.Request(
        f"{sent.scheme}://{sent.netloc}{path}",
        headers={"Authorization": response.request.headers["Authorization"]},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


def _error(response):
    try:
        return json.loads(response.content).get("error")
    except (ValueError, AttributeError):
        return None


def _state_explains(response, case):
    """Whether this 400 is one of the two refusals the user's state decides."""
    if response.status_code != 400:
        return False
    label = case.operation.label
    name = urllib.parse.quote(str(case.path_parameters.get("name", "")), safe="")
    body = case.body if isinstance(case.body, dict) else {}
    if label == CREDIT and _error(response) == "invalid_credit" and "add" in body:
        add = body["add"]
        if isinstance(add, bool) or not isinstance(add, (int, float)) or add != int(add):
            return False
        balance = _read_back(response, f"/admin/v1/users/{name}")["credit"]
        return not 0 <= balance + int(add) <= I64_MAX
    if label in KEY_MAKERS and _error(response) == "too_many_keys":
        keys = _read_back(response, f"/admin/v1/users/{name}/keys")["keys"]
        return len(keys) >= MAX_KEYS
    return False


@schemathesis.check
def positive_data_acceptance_with_state(ctx, response, case):
    """positive_data_acceptance, where a 400 the user's state explains passes."""
    if _state_explains(response, case):
        return None
    return positive_data_acceptance(ctx, response, case)
