#!/usr/bin/env python3
"""`make test`: the README's quick start, word for word, against a fresh server.

Usage: deploy/test-quickstart.py path/to/creditgate

Starts `make run`'s own script (deploy/run-demo.sh) with the given binary on a
fresh, uniquely named database of the server deploy/dev-db.sh finds, on free
ports, writing its env file where the quick start sources it from
(`target/demo.env` under a scratch folder that is the commands' working
folder). Then it takes the block between the README's `<!-- quickstart begin`
and `<!-- quickstart end` markers, splits it into commands (a line ending in
`\\` or `|` continues), and runs them one after another in ONE bash, as a user
pasting them would: nothing in them is rewritten. The env file puts the
binary's folder on PATH, so the commands run this build.

Every command must exit 0, and the outputs below must show what the README's
comments promise (a charge lowers the credit, a refund gives it back, …).
Always stops the server and drops the database.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (a regex the command matches, regexes its stdout must match). Each entry
# is used by the first command it matches, in order.
EXPECT = [
    (r"^source target/demo\.env", []),
    (r"creditgate user show demo", [r"\bdemo\b", r"\b100\b"]),
    (r"banks_data/BOFA", [r'"credit_remaining":99\b']),
    (r'demo:\$TOKEN" \$CG/api/v1\.0/credit', [r'"credit":99\b', r'"username":"demo"']),
    (r"demo:wrong", [r'"error":"unauthorized"']),
    (r"http\.server", []),
    (r"^until curl", []),
    (r"\$CG/files/ ", [r"^HTTP/1\.[01] 200", r"(?im)^x-credit-remaining: 98\r?$"]),
    (r"\$CG/files/missing", [r"^HTTP/1\.[01] 404", r"(?im)^x-credit-remaining: 98\r?$"]),
    (r"/v1/charge", [r'"valid":true', r'"credit_remaining":96\b']),
    (r"^HOLD=", []),
    (r"/capture", [r'"captured":7\b', r'"credit_remaining":89\b']),
    (r"user credit demo --add 50", [r"\b139\b"]),
    (r"creditgate ledger demo", [r"top-up", r"\+50"]),
    (r"creditgate usage demo", [r"route:/files", r"banks_data|bank"]),
    (r"/admin/v1/users/demo", [r'"credit":139\b', r'"username":"demo"']),
]


def say(msg):
    print(f"test-quickstart: {msg}", file=sys.stderr)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quickstart_commands():
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- quickstart begin.*?-->\n```sh\n(.*?)^```\n<!-- quickstart end", text, re.S | re.M)
    if not m:
        raise SystemExit("test-quickstart: no quickstart block in README.md")
    commands, current = [], ""
    for line in m.group(1).splitlines():
        current += line + "\n"
        code = re.sub(r"\s+#.*$", "", line).rstrip()
        if not (code.endswith("\\") or code.endswith("|")):
            commands.append(current)
            current = ""
    if current:
        commands.append(current)
    return commands


def sql(server, statement):
    hostport = server.split("://", 1)[1].split("@")[-1]
    host, port = hostport.rsplit(":", 1)
    client = shutil.which("mariadb") or shutil.which("mysql")
    subprocess.run([client, "--no-defaults", "--protocol=tcp", f"-h{host}", f"-P{port}", "-uroot",
                    "-e", statement], check=True)


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: deploy/test-quickstart.py path/to/creditgate")
    binary = Path(sys.argv[1]).resolve()
    commands = quickstart_commands()
    server = subprocess.run([ROOT / "deploy/dev-db.sh"], check=True, capture_output=True,
                            text=True).stdout.strip()
    db = f"cg_quickstart_{os.getpid()}_{int(time.time())}"
    scratch = Path(tempfile.mkdtemp(prefix="cg-quickstart-"))
    port, up_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITGATE_")}
    env.update(DATABASE_URL=f"{server}/{db}", CREDITGATE_BIND=f"127.0.0.1:{port}",
               CREDITGATE_DEMO_UPSTREAM=f"http://127.0.0.1:{up_port}",
               CREDITGATE_DEMO_ENV=str(scratch / "target/demo.env"))
    log = open(scratch / "make-run.log", "w")
    demo = subprocess.Popen([ROOT / "deploy/run-demo.sh", binary], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    failures = []
    try:
        wait_for(f"http://127.0.0.1:{port}/health", demo, scratch / "make-run.log")
        say(f"{len(commands)} commands from README.md against 127.0.0.1:{port}, database {db}")
        failures = run(commands, scratch)
    finally:
        demo.terminate()
        try:
            demo.wait(timeout=15)
        except subprocess.TimeoutExpired:
            demo.kill()
        try:
            sql(server, f"DROP DATABASE IF EXISTS `{db}`")
        except Exception as e:  # the verdict matters more than the cleanup
            say(f"could not drop {db}: {e}")
    if failures:
        for f in failures:
            say(f)
        say(f"FAILED ({len(failures)}); the server's log: {scratch / 'make-run.log'}")
        return 1
    shutil.rmtree(scratch, ignore_errors=True)
    say(f"ok: every command of the quick start worked as the README says")
    return 0


def wait_for(url, proc, log):
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"test-quickstart: make run's script exited; see {log}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"test-quickstart: the server did not answer in 30 s; see {log}")


def run(commands, scratch):
    """Runs the commands in one bash, each one's output and status apart."""
    lines = ["cd " + sh_quote(str(scratch))]
    for i, cmd in enumerate(commands):
        (scratch / f"cmd{i}.sh").write_text(cmd)
        lines.append(f"{{ source cmd{i}.sh; }} >out{i} 2>err{i} </dev/null; echo $? >rc{i}")
    # Whatever the block left running in the background, stopped by its id.
    lines.append("for p in $(jobs -p); do kill \"$p\" 2>/dev/null; done; wait 2>/dev/null; true")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITGATE_")}
    env.pop("DATABASE_URL", None)
    failures, expect = [], list(EXPECT)
    try:
        subprocess.run(["bash", "-c", "\n".join(lines)], env=env, timeout=300)
    except subprocess.TimeoutExpired:
        return ["the quick start did not finish in 300 s"]
    for i, cmd in enumerate(commands):
        one = " ".join(cmd.split())
        out = (scratch / f"out{i}").read_text()
        err = (scratch / f"err{i}").read_text()
        rc = (scratch / f"rc{i}").read_text().strip()
        if rc != "0":
            failures.append(f"exit {rc}: {one}\n  stdout: {out!r}\n  stderr: {err!r}")
            continue
        for j, (pattern, wants) in enumerate(expect):
            if re.search(pattern, cmd):
                del expect[j]
                for want in wants:
                    if not re.search(want, out, re.M):
                        failures.append(f"{one}\n  stdout does not match {want!r}: {out!r}")
                break
    for pattern, _ in expect:
        failures.append(f"no command of the quick start matches {pattern!r} any more: "
                        "update EXPECT in deploy/test-quickstart.py with the README")
    return failures


def sh_quote(s):
    return "'" + s.replace("'", "'\\''") + "'"


if __name__ == "__main__":
    sys.exit(main())
