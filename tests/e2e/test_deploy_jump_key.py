#!/usr/bin/env python3
"""Issue 17: deploy/ gives every replica the same jump host key, from the Secret that
docs/jump-host.md and docs/deploy.md say how to create. The rendered Deployment mounts it
(optional, so `kubectl apply -k deploy/` works without it), and two gateways ("replicas") with
their own state dirs but that key present one host key."""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import free_port  # noqa: E402
from test_deploy import DEPLOY, REPO, by_kind, kustomize  # noqa: E402
from test_jump_host_key import key_fingerprint, served_fingerprint  # noqa: E402

SECRET = "spark-gateway-jump-host-key"
MOUNT = "/var/run/secrets/spark-gateway-jump"
KEY = "ssh_host_ed25519_key"


class DeployJumpKey(harness.GatewayTestCase):

    def test_the_deployment_mounts_the_optional_secret_the_docs_create(self):
        dep = by_kind(kustomize(DEPLOY))["Deployment"][0]
        pod = dep["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        self.assertIn(MOUNT, mounts)
        self.assertTrue(mounts[MOUNT].get("readOnly"))
        secret = volumes[mounts[MOUNT]["name"]]["secret"]
        self.assertEqual(secret["secretName"], SECRET)
        self.assertTrue(secret["optional"], "apply -k must work before the Secret exists")
        self.assertEqual(secret["items"], [{"key": KEY, "path": KEY}])
        self.assertEqual(secret["defaultMode"], 0o440, "readable by the pod's fsGroup only")
        self.assertEqual(pod["securityContext"]["fsGroup"], pod["securityContext"]["runAsGroup"])
        for doc in ("jump-host.md", "deploy.md"):
            with open(os.path.join(REPO, "docs", doc)) as f:
                text = f.read()
            self.assertIn("kubectl -n spark create secret generic %s" % SECRET, text, doc)
            self.assertIn("--from-file=%s=" % KEY, text, doc)
            self.assertIn('"host_keys": ["%s/%s"]' % (MOUNT, KEY), text, doc)

    def test_replicas_given_the_secrets_key_present_the_same_host_key(self):
        # What the Secret mount gives each pod: the same file, made by the documented command.
        key = os.path.join(self.tmpdir, MOUNT.lstrip("/"), KEY)
        os.makedirs(os.path.dirname(key))
        subprocess.run(["ssh-keygen", "-t", "ed25519", "-N", "", "-C", "spark-gw", "-f", key], check=True,
                       timeout=30, stdout=subprocess.DEVNULL)
        os.chmod(key, 0o440)
        authorized = self.jump_authorized_keys()
        ports = []
        for replica in ("a", "b"):
            port = free_port(self.host)
            cfg = self.config_dict(sparks=[])
            cfg["state_dir"] = "state-" + replica  # an emptyDir each
            cfg["jump"] = {"listen": "%s:%d" % (self.host, port), "host_keys": [key], "authorized_keys": authorized}
            path = os.path.join(self.tmpdir, "config-%s.json" % replica)
            self.write_config_dict(cfg, path)
            self.start_gateway(config_path=path)
            ports.append(port)
        fingerprint = key_fingerprint(key)
        self.assertIsNotNone(fingerprint)
        self.assertEqual([served_fingerprint(self.host, p) for p in ports], [fingerprint, fingerprint])
        for gw in self.gateways:
            gw.wait_log("jump: host key ssh-ed25519 %s" % fingerprint)
            self.assertEqual(gw.log_lines("generated"), [], "a replica made a key of its own")


if __name__ == "__main__":
    harness.main()
