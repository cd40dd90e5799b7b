"""`make test-schema`: schemathesis' positive_data_acceptance, where the
answer also depends on what the database holds, and real holds for the
hold routes.

positive_data_acceptance fails any refusal of a request the document calls
valid, except the statuses that say "not now" (404, 409, ...). Some of the
contract's refusals depend on the resource's state or on earlier requests,
and no schema can say when they happen:
  - POST /admin/v1/users/{name}/credit: 400 `invalid_credit` when the
    result would leave held..=i64::MAX (below what open holds reserve,
    below 0, or an overflow);
  - POST /admin/v1/users/{name}/keys and .../rotate: 400 `too_many_keys` when
    the user already has 20 working keys;
  - every route that takes an Idempotency-Key (the bank route, the /v1/
    POSTs): 422 `idempotency_key_reused` when the same owner (user or
    service) sent that key before with a different request (method, path,
    query, body). schemathesis draws keys from a small space, so it reuses
    them.
This check replaces positive_data_acceptance (excluded on the command line)
and runs it on every answer, except that such a refusal passes only once it
is shown to be justified: the state read back (the user's balance and held
credit, or their working keys), or, for a 422, the key's first request in
this run, which the check remembers. A refusal nothing explains (an `add`
of 5 on a balance of 10 refused, a 422 for a key never sent) still fails,
under this check's name.

`before_call` makes positive cases of the hold routes use real holds: most
generated ids are no hold (404), so three cases in four get a hold placed
just before for the seeded user (SCHEMA_USER, with the service token
SCHEMA_SERVICE_TOKEN, on SCHEMA_BASE_URL; set by deploy/test-schema.sh), or
the previous one again (settled by then: 409, or the same call answered the
same). Two in three positive charges and holds name the seeded user (by
`user`, or by `credentials` with SCHEMA_USER_TOKEN) instead of a generated
one, who does not exist, so that VALID answers and granted holds are tried.

Loaded with SCHEMATHESIS_HOOKS=deploy/schema_hooks.py; the run uses one
worker, so nothing changes the state between the answer and the read-back.
"""

import atexit
import collections
import itertools
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance

I64_MAX = 2**63 - 1
MAX_KEYS = 20
CREDIT = "POST /admin/v1/users/{name}/credit"
KEY_MAKERS = ("POST /admin/v1/users/{name}/keys", "POST /admin/v1/users/{name}/rotate")
HOLD_ROUTES = (
    "GET /v1/holds/{id}",
    "POST /v1/holds/{id}/capture",
    "POST /v1/holds/{id}/release",
)
NAMING_ROUTES = ("POST /v1/charge", "POST /v1/holds")

# What the hooks did in this run, said at its end (so that a run in which
# they did nothing shows it).
_did = collections.Counter()


@atexit.register
def _say():
    if _did:
        done = ", ".join(f"{what}: {n}" for what, n in sorted(_did.items()))
        print(f"test-schema: schema_hooks.py: {done}", file=sys.stderr)


BASE = os.environ.get("SCHEMA_BASE_URL")
SERVICE_TOKEN = os.environ.get("SCHEMA_SERVICE_TOKEN")
USER = os.environ.get("SCHEMA_USER")
USER_TOKEN = os.environ.get("SCHEMA_USER_TOKEN")


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


def _whole(n):
    return not isinstance(n, bool) and isinstance(n, (int, float)) and n == int(n)


def _state_explains(response, case):
    """Whether this 400 is one of the refusals the user's state decides."""
    if response.status_code != 400:
        return False
    label = case.operation.label
    name = urllib.parse.quote(str(case.path_parameters.get("name", "")), safe="")
    body = case.body if isinstance(case.body, dict) else {}
    if label == CREDIT and _error(response) == "invalid_credit":
        change = next((k for k in ("add", "set") if k in body and _whole(body[k])), None)
        if change is None:
            return False
        try:
            user = _read_back(response, f"/admin/v1/users/{name}")
        except urllib.error.HTTPError:
            return False  # no such user: nothing of theirs explains it
        balance, held, n = user["credit"], user.get("held", 0), int(body[change])
        if change == "add":
            return not held <= balance + n <= I64_MAX
        return n < held
    if label in KEY_MAKERS and _error(response) == "too_many_keys":
        keys = _read_back(response, f"/admin/v1/users/{name}/keys")["keys"]
        return len(keys) >= MAX_KEYS
    return False


EXPORT = "GET /admin/v1/usage/export"


def _range_explains(response, case):
    """Whether this 400 is the export's `from` after `to`: each day is valid
    on its own (all a schema can say), the pair is not."""
    if case.operation.label != EXPORT or response.status_code != 400:
        return False
    query = case.query or {}
    days = (str(query.get("from", "")), str(query.get("to", "")))
    # YYYY-MM-DD compares as text in the order of the days.
    return _error(response) == "invalid_range" and days[0] > days[1]


# (owner's Authorization, Idempotency-Key) -> the first request that claimed it.
_claimed = {}


def _fingerprint(request):
    """What the server compares under a key: method, path, query, body (its
    fields in any order)."""
    url = urllib.parse.urlsplit(request.url)
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode()
    try:
        body = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")) if body.strip() else "{}"
    except ValueError:
        pass
    return (request.method, url.path, url.query, body)


def _claims_key(response):
    """Whether the answer came after its key was claimed (so it is stored)."""
    if response.status_code in (200, 201, 402, 409):
        return True
    return _error(response) in ("unknown_bank", "unknown_hold", "too_many_holds")


def _key_reuse_explains(response):
    """Remembers each key's first request; whether a 422 reused a key."""
    request = response.request
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return False
    owner = (request.headers.get("Authorization"), key)
    first = _claimed.get(owner)
    if response.status_code == 422:
        return _error(response) == "idempotency_key_reused" and first is not None and first != _fingerprint(request)
    if first is None and _claims_key(response):
        _claimed[owner] = _fingerprint(request)
    return False


@schemathesis.check
def positive_data_acceptance_with_state(ctx, response, case):
    """positive_data_acceptance, where a refusal the state explains passes."""
    if _key_reuse_explains(response):
        _did["422s explained by a key's earlier request"] += 1
        return None
    if _state_explains(response, case):
        _did["400s explained by the state"] += 1
        return None
    if _range_explains(response, case):
        _did["export 400s for from after to"] += 1
        return None
    return positive_data_acceptance(ctx, response, case)


_turns = itertools.count()
_last_hold = None


def _positive(case):
    generation = getattr(case.meta, "generation", None)
    mode = getattr(generation, "mode", None)
    return mode is not None and mode.is_positive


def _place_hold():
    """A real hold of 1 for the seeded user; its id, or None if refused."""
    request = urllib.request.Request(
        f"{BASE}/v1/holds",
        data=json.dumps({"user": USER, "amount": 1}).encode(),
        headers={"Authorization": f"Bearer {SERVICE_TOKEN}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            if answer.status == 201:
                _did["real holds placed"] += 1
                return json.load(answer)["hold"]["id"]
    except urllib.error.URLError:
        pass
    return None


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    """Real holds and the seeded user in positive /v1/ cases (see above)."""
    global _last_hold
    if not (BASE and SERVICE_TOKEN and USER) or not _positive(case):
        return
    label = case.operation.label
    if label in HOLD_ROUTES:
        turn = next(_turns) % 4
        if turn == 0:
            return
        if turn == 3 and _last_hold is not None:
            hold = _last_hold
        else:
            hold = _place_hold()
            _last_hold = hold
        if hold is not None:
            _did["hold-route cases on a real hold"] += 1
            case.path_parameters = {**(case.path_parameters or {}), "id": hold}
    elif label in NAMING_ROUTES and isinstance(case.body, dict):
        turn = next(_turns) % 3
        if turn == 0:
            return
        body = {k: v for k, v in case.body.items() if k not in ("user", "credentials")}
        if turn == 1 or not USER_TOKEN:
            body["user"] = USER
        else:
            body["credentials"] = f"{USER}:{USER_TOKEN}"
        case.body = body
        _did["charges and holds naming the seeded user"] += 1
