"""A client written the way the Flask sample's clients are: it calls the bank
route until the sample says the credit is spent, expects status 201 for every
answer, and reads ["Data"] or ["Status"]. Standard library only (urllib in
place of requests, which is what such scripts use).

usage: legacy_client.py BASE_URL USERNAME TOKEN BANK MAX_CALLS
Prints one JSON line: what the calls returned. Exits 1 on the first answer
that is not the sample's (a status other than 201, or a body without "Data"
or "Status"), naming it.
"""
import json
import sys
import urllib.error
import urllib.request


def call(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def main():
    base, user, token, bank, max_calls = sys.argv[1:6]
    url = f"{base}/api/v1.0/banks_data/{bank}/?token={user}:{token}"
    data, status_texts = [], []
    for _ in range(int(max_calls)):
        code, body = call(url)
        if code != 201:
            print(json.dumps({"error": f"status {code}", "body": body.decode()}))
            sys.exit(1)
        answer = json.loads(body)
        if "Data" in answer:
            data.append(answer["Data"])
        elif "Status" in answer:
            status_texts.append(answer["Status"])
            break
        else:
            print(json.dumps({"error": "neither Data nor Status", "body": answer}))
            sys.exit(1)
    print(json.dumps({"data": data, "status": status_texts}))


if __name__ == "__main__":
    main()
