#!/usr/bin/python3
"""chef-solo on the sandbox's builder: a recorder, because Chef Infra cannot be installed here.

Packer runs this exactly as it runs chef-solo on AWS (over SSH, with sudo, after uploading
the cookbooks and writing solo.rb). It keeps what it was given, in /run/sandbox-builder (a
folder outside the image):

* its command line, the solo.rb Packer wrote, the node JSON (-j) and its run list;
* a digest of every cookbook folder solo.rb names (sha256 over each file's relative path and
  bytes, in path order: tests compare it with the release bundle's cookbooks);
* whether the data-bag secret file was there, its mode and owner (never its content);

then answers with the exit code (and output) the sandbox was told to give. On success it does
the one thing of the base cookbook the smoke test reads: the ``file '/etc/ami-release.json'``
resource (the release identity from the node JSON), so the image carries it as a converged
one would. Nothing else of any cookbook runs. Standard library only: runs on the builder.
"""

import hashlib
import json
import os
import re
import sys
import time

RECORD_DIR = "/run/sandbox-builder"
SECRET = "/etc/chef/encrypted_data_bag_secret"
IDENTITY = "/etc/ami-release.json"


def tree_digest(root):
    h = hashlib.sha256()
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            files.append(rel)
            with open(full, "rb") as f:
                data = f.read()
            h.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest(), files


def option(argv, *names):
    for i, a in enumerate(argv):
        if a in names and i + 1 < len(argv):
            return argv[i + 1]
    return None


def same(path):
    return path


def main(argv, local=same, secret=SECRET, identity=IDENTITY, secret_acl=None):
    """Record one chef-solo call. `local` maps a path of the guest (C:/… on Windows) to this
    machine's; `secret_acl` reads the ACL a Windows guest set on the secret file (icacls)."""
    record = {"argv": argv, "uid": os.geteuid(), "time": time.time()}
    config_path = option(argv, "-c", "--config")
    config = ""
    if config_path and os.path.exists(local(config_path)):
        with open(local(config_path)) as f:
            config = f.read()
    record["config"] = config
    paths = []
    m = re.search(r"cookbook_path\s*\[([^\]]*)\]", config)
    if m:
        paths = re.findall(r'"([^"]+)"', m.group(1))
    record["cookbooks"] = {}
    for p in paths:
        digest, files = tree_digest(local(p)) if os.path.isdir(local(p)) else (None, [])
        record["cookbooks"][p] = {"sha256": digest, "files": files}
    node_path = option(argv, "-j", "--json-attributes")
    node = None
    if node_path and os.path.exists(local(node_path)):
        with open(local(node_path)) as f:
            node = json.load(f)
    record["node_json_path"] = node_path
    record["node"] = node
    record["run_list"] = (node or {}).get("run_list")
    if os.path.exists(local(secret)):
        st = os.stat(local(secret))
        record["secret_file"] = {
            "present": True,
            "mode": oct(st.st_mode & 0o7777),
            "uid": st.st_uid,
            "size": st.st_size,
        }
        if secret_acl is not None:
            record["secret_file"]["acl"] = secret_acl(secret)
    else:
        record["secret_file"] = {"present": False}
    with open(os.path.join(RECORD_DIR, "chef-solo.json")) as f:
        answer = json.load(f)
    record["exit_code"] = answer["exit_code"]
    n = len([x for x in os.listdir(RECORD_DIR) if x.startswith("call-")])
    with open(os.path.join(RECORD_DIR, f"call-{n:03d}.json"), "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)

    print("Starting Chef Infra Client (sandbox recorder: nothing is converged)")
    print(f"[recorder] run list {record['run_list']}")
    if answer["exit_code"] != 0:
        out = answer.get("output") or "Chef::Exceptions::Exec: the sandbox was told to fail this Chef run"
        for line in out.splitlines():
            print(line, file=sys.stderr)
        print("FATAL: Chef::Exceptions::ChildConvergeError: Chef run process exited unsuccessfully", file=sys.stderr)
        return int(answer["exit_code"])
    if node and isinstance(node.get("ami_release"), dict):
        old = os.umask(0o022)
        try:
            with open(local(identity), "w") as f:
                json.dump(node["ami_release"], f, indent=2)
                f.write("\n")
        finally:
            os.umask(old)
    print("Chef Infra Client finished (recorded)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
