#!/usr/bin/python3
"""The login shell of the sandbox's Windows builder: what Packer's SSH communicator, its
powershell and chef-solo (guest_os_type windows) provisioners send, recorded, not executed.

Windows cannot run here. OpenSSH Server on Windows hands each command to the user's shell;
on this builder the shell is this program (``windows-shell -c "<command>"``). It knows the
commands Packer sends and nothing more:

* ``echo '…'`` and ``if (Test-Path <file>) {…}`` (Packer's own notes and clean-up);
* ``scp -t <folder>``: Packer's uploads. Run by the real ``scp`` into the builder's drive
  (``C:/…`` is ``/winroot/C:/…``), so every uploaded byte is really there.
* ``powershell … "& { …; . <env vars file>; &'<script>'; exit $LastExitCode }"`` (the powershell
  provisioner) and ``powershell.exe -Command "New-Item …"`` (the chef provisioner's folders):
  the script is recorded (its text, the *names* of the variables it got, never their values),
  and the few statements our template uses have their effect on the drive, so what a later
  step sees is what Windows would show: ``New-Item -ItemType Directory``, ``Set-Content``,
  ``[IO.File]::WriteAllBytes(…FromBase64String…)``, ``icacls`` (the ACL is kept beside the
  file), ``Remove-Item``, and ``& '…\\ec2launch.exe' sysprep`` (recorded; answers the exit
  code the test chose).
* ``c:/opscode/chef/bin/chef-solo.bat …``: the chef-solo recorder (chef_solo_recorder.py).

Anything else is refused (exit 1, saying what it could not run), so a template change that
this builder does not understand fails loudly instead of passing unseen. Standard library only.
"""

import base64
import json
import os
import re
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chef_solo_recorder

ROOT = "/winroot"
RECORD_DIR = "/run/sandbox-builder"
SECRET = "C:/chef/encrypted_data_bag_secret"
IDENTITY = "C:/ProgramData/ami-release.json"


class Refused(Exception):
    pass


def local(path):
    """C:\\a\\b, C:/a/b, c:/a/b, /C:/a/b -> /winroot/C:/a/b."""
    p = path.strip().strip("'\"").replace("\\", "/")
    if p.startswith("/") and re.match(r"^/[A-Za-z]:", p):
        p = p[1:]
    m = re.match(r"^([A-Za-z]):(.*)$", p)
    if not m:
        raise Refused(f"not a Windows path: {path}")
    return f"{ROOT}/{m.group(1).upper()}:{m.group(2) or '/'}"


def record(event):
    event["time"] = time.time()
    with open(os.path.join(RECORD_DIR, "windows-events.jsonl"), "a") as f:
        f.write(json.dumps(event, sort_keys=True) + "\n")


def answers():
    with open(os.path.join(RECORD_DIR, "chef-solo.json")) as f:
        return json.load(f)


def acl_file(path):
    return local(path) + ".sandbox-acl"


def read_acl(path):
    try:
        with open(acl_file(path)) as f:
            return f.read()
    except OSError:
        return None


def split_statements(code):
    """Split PowerShell code on ; and newlines outside quotes, braces and parentheses."""
    out, cur, depth, quote = [], [], 0, None
    for ch in code:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "{(":
            depth += 1
        elif ch in "})":
            depth -= 1
        elif ch in ";\n" and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur).strip())
    return [s for s in out if s]


def env_file(path):
    """Packer's env-vars script: $env:NAME="value"; … (values escaped with backticks)."""
    env = {}
    with open(local(path), encoding="utf-8-sig") as f:
        text = f.read()
    for name, value in re.findall(r'\$env:(\w+)="((?:[^"`]|`.)*)"', text):
        env[name] = re.sub(r"`(.)", r"\1", value)
    return env


def cmdlet_path(args):
    """The path argument of a cmdlet call: -Path's value, else the one positional argument."""
    tokens = shlex.split(args.replace("\\", "/"))
    with_value = {"-itemtype", "-erroraction", "-path", "-value", "-encoding"}
    positional, i = [], 0
    while i < len(tokens):
        t = tokens[i]
        if t.lower() == "-path" and i + 1 < len(tokens):
            return tokens[i + 1]
        if t.lower() in with_value:
            i += 2
            continue
        if not t.startswith("-"):
            positional.append(t)
        i += 1
    if len(positional) != 1:
        raise Refused(f"cannot tell the path in: {args}")
    return positional[0]


def value_of(expr, env):
    expr = expr.strip()
    m = re.match(r"^\$Env:(\w+)$", expr, re.IGNORECASE)
    if m:
        return env.get(m.group(1), "")
    return expr.strip("'\"")


class Shell:
    def __init__(self):
        self.env = {}
        self.last_exit = 0

    # one statement of PowerShell, as our template and Packer write them
    def run(self, stmt):
        s = re.sub(r"\s*\|\s*Out-Null\s*$", "", stmt.strip(), flags=re.IGNORECASE)
        if not s or s.startswith("#"):
            return
        if re.match(r"^if \(Test-Path variable:global:ProgressPreference\)", s, re.IGNORECASE):
            return
        m = re.match(r"^if \(Test-Path ([^)]+)\)\s*\{(.*)\}$", s, re.IGNORECASE | re.DOTALL)
        if m:  # Packer's cleanup of its env-vars file
            if os.path.exists(local(m.group(1))):
                for inner in split_statements(m.group(2)):
                    self.run(inner)
            return
        m = re.match(r"^echo\s+'([^']*)'$", s, re.IGNORECASE)
        if m:
            print(m.group(1))
            self.last_exit = 0
            return
        m = re.match(r"^&\s*\{(.*)\}$", s, re.DOTALL)
        if m:
            for inner in split_statements(m.group(1)):
                self.run(inner)
            return
        m = re.match(r"^\.\s+(\S+)$", s)
        if m:
            self.env.update(env_file(m.group(1)))
            return
        m = re.match(r"^exit\s+\$LastExitCode$", s, re.IGNORECASE)
        if m:
            raise SystemExit(self.last_exit)
        m = re.match(r"^&\s*'([^']+\.ps1)'$", s)
        if m:
            self.script(m.group(1))
            return
        m = re.match(r"^&\s*'([^']*ec2launch\.exe)'\s+sysprep\b(.*)$", s, re.IGNORECASE)
        if m:
            self.sysprep(m.group(2).strip())
            return
        m = re.match(r"^New-Item\s+(.*)$", s, re.IGNORECASE)
        if m and re.search(r"-ItemType\s+directory", m.group(1), re.IGNORECASE):
            os.makedirs(local(cmdlet_path(m.group(1))), exist_ok=True)
            self.last_exit = 0
            return
        m = re.match(r"^Set-Content\s+(?:-NoNewline\s+)?-Path\s+(\S+)\s+-Value\s+(\S+)$", s, re.IGNORECASE)
        if m:
            self.write(m.group(1), value_of(m.group(2), self.env).encode())
            return
        m = re.match(
            r"^\[IO\.File\]::WriteAllBytes\('([^']+)',\s*\[Convert\]::FromBase64String\((\$Env:\w+)\)\)$",
            s,
            re.IGNORECASE,
        )
        if m:
            self.write(m.group(1), base64.b64decode(value_of(m.group(2), self.env)))
            return
        m = re.match(r"^icacls\s+(\S+)\s+(.*)$", s, re.IGNORECASE)
        if m:
            if not os.path.exists(local(m.group(1))):
                self.fail(f"icacls: {m.group(1)}: The system cannot find the file specified.")
            with open(acl_file(m.group(1)), "w") as f:
                f.write(m.group(2))
            self.last_exit = 0
            return
        m = re.match(r"^Remove-Item\s+(.*)$", s, re.IGNORECASE)
        if m:
            args = re.sub(r"-(Force|Recurse|ErrorAction\s+\w+|Path)\b", " ", m.group(1), flags=re.IGNORECASE)
            for target in [t.strip().strip("'\"") for t in args.split(",") if t.strip()]:
                path = local(target)
                if not os.path.lexists(path):
                    self.fail(f"Remove-Item : Cannot find path '{target}' because it does not exist.")
                if os.path.isdir(path) and not os.path.islink(path):
                    import shutil

                    shutil.rmtree(path)
                else:
                    os.unlink(path)
                if os.path.exists(acl_file(target)):
                    os.unlink(acl_file(target))
            self.last_exit = 0
            return
        raise Refused(f"the sandbox's Windows builder does not know how to run: {s[:200]}")

    def fail(self, message):
        print(message, file=sys.stderr)
        raise SystemExit(1)

    def write(self, path, data):
        parent = os.path.dirname(local(path))
        if not os.path.isdir(parent):
            self.fail(f"Could not find a part of the path '{path}'.")
        with open(local(path), "wb") as f:
            f.write(data)
        self.last_exit = 0

    def script(self, path):
        with open(local(path), encoding="utf-8-sig") as f:
            text = f.read()
        record(
            {
                "kind": "powershell",
                "script": text,
                "variables": sorted(self.env),  # names only: values may be secrets
                "state": drive_state(),
            }
        )
        for stmt in split_statements(text):
            self.run(stmt)
            if self.last_exit != 0:
                break

    def sysprep(self, args):
        a = answers()
        record({"kind": "sysprep", "args": args, "exit_code": a.get("sysprep_exit_code", 0), "state": drive_state()})
        print("Sysprep (EC2Launch v2): recorded by the sandbox, Windows is not generalised here")
        if a.get("sysprep_exit_code", 0):
            print(a.get("sysprep_output") or "Sysprep failed: the sandbox was told to fail it", file=sys.stderr)
        self.last_exit = int(a.get("sysprep_exit_code", 0))


def drive_state():
    """What a test asks about the drive at each step (exists, and the ACL where one was set)."""
    out = {}
    for path in (SECRET, "C:/chef/ami-release-node.json", "C:/ProgramData/ssh/administrators_authorized_keys"):
        out[path] = {"present": os.path.exists(local(path)), "acl": read_acl(path)}
    return out


def powershell_code(command):
    """The PowerShell code of `powershell [options] "<code>"` or `powershell -Command "<code>"`."""
    argv = shlex.split(command, posix=True)
    rest = argv[1:]
    while rest and rest[0].startswith("-") and rest[0].lower() not in ("-command", "-c"):
        rest = rest[2:] if rest[0].lower() in ("-executionpolicy", "-ep") else rest[1:]
    if rest and rest[0].lower() in ("-command", "-c"):
        rest = rest[1:]
    return " ".join(rest)


def main(argv):
    if len(argv) < 2 or argv[0] != "-c":
        print("this builder's shell only runs commands (-c)", file=sys.stderr)
        return 1
    command = argv[1]
    os.chdir(ROOT)
    first = command.split()[0].lower() if command.split() else ""
    if first == "scp":
        record({"kind": "scp", "command": command})
        args = shlex.split(command)
        args = [a if a.startswith("-") or a == "scp" else local(a) for a in args]
        os.execv("/usr/bin/scp", args)
    if first == "echo":  # cmd's echo (Packer: "skipping chmod 0777 …" on Windows)
        print(command.split(None, 1)[1] if len(command.split()) > 1 else "")
        return 0
    if first.endswith("chef-solo.bat"):
        record({"kind": "chef-solo", "state": drive_state()})
        args = shlex.split(command)[1:]
        return chef_solo_recorder.main(args, local=local, secret=SECRET, identity=IDENTITY, secret_acl=read_acl)
    if first in ("powershell", "powershell.exe"):
        shell = Shell()
        code = powershell_code(command)
        try:
            for stmt in split_statements(code):
                shell.run(stmt)
        except Refused as err:
            record({"kind": "refused", "command": command})
            print(str(err), file=sys.stderr)
            return 1
        return shell.last_exit
    record({"kind": "refused", "command": command})
    print(f"the sandbox's Windows builder does not know how to run: {command[:200]}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Refused as err:
        print(str(err), file=sys.stderr)
        sys.exit(1)
