#!/usr/bin/env python3
"""Self-test of the Kubernetes API double (tests/k8s_double), through HTTP as a client sees it.

If these fail, the kubernetes backend's e2e tests cannot be trusted: fix the double first.
Loopback only; every wait has a deadline.
"""
import json
import os
import signal
import socket
import ssl
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import wait_until  # noqa: E402

harness.import_k8s_double()
from k8s_double import proctree  # noqa: E402

DEPLOYMENTS = "/apis/apps/v1/namespaces/spark/deployments"
PODS = "/api/v1/namespaces/spark/pods"
MERGE = "application/merge-patch+json"
CONFLICT_MSG = ('Operation cannot be fulfilled on deployments.apps "brave-dolphin": the object has been '
                'modified; please apply your changes to the latest version and try again')


def ready(pod):
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


class K8sDoubleSelfTest(harness.GatewayTestCase):
    NEEDS_GATEWAY = False

    def start(self, **kw):
        kw.setdefault("bookmark_interval", 0.3)
        kw.setdefault("start_delay", 0.2)
        self.k8s = self.start_k8s_double(**kw)
        self.api = self.k8s.api
        self.c = self.k8s.client()
        self.addCleanup(lambda: self.assertEqual(self.api.errors, [], "the double itself failed"))
        if self.k8s.kubelet is not None:
            self.addCleanup(lambda: self.assertEqual(self.k8s.kubelet.errors, [], "the fake kubelet failed"))
        return self.k8s

    def watch(self, path, **params):
        w = self.c.watch(path, **params)
        self.addCleanup(w.close)
        return w

    # -- list + watch -------------------------------------------------------------------

    def test_list_then_watch_sees_changes_in_order_with_bookmarks_and_resume(self):
        self.start()
        self.api.create_deployment("other", labels={"app.kubernetes.io/part-of": "not-spark"})
        r = self.c.request("GET", DEPLOYMENTS, query={"labelSelector": "app.kubernetes.io/part-of=spark"})
        self.assertEqual(r.status, 200, r.body)
        lst = r.json
        self.assertEqual((lst["kind"], lst["apiVersion"], lst["items"]), ("DeploymentList", "apps/v1", []))
        rv = lst["metadata"]["resourceVersion"]
        w = self.watch(DEPLOYMENTS, resourceVersion=rv, allowWatchBookmarks="true",
                       labelSelector="app.kubernetes.io/part-of=spark", timeoutSeconds="30")
        self.assertEqual(w.status, 200)
        self.assertEqual(dict((k.lower(), v) for k, v in w.headers)["transfer-encoding"], "chunked")

        self.api.create_deployment("brave-dolphin", annotations={"spark-gateway/port": "4022"})
        self.api.create_deployment("not-matching", labels={"x": "y"})
        self.api.annotate("deployments", "brave-dolphin", **{"spark-gateway/last-activity": "2024-01-01T00:00:00Z"})
        self.api.scale("brave-dolphin", 1)
        self.api.delete("deployments", "brave-dolphin")

        seen = []
        while len(seen) < 4 or seen[-1]["type"] != "DELETED":
            ev = w.wait_for(lambda e: e["type"] != "BOOKMARK", timeout=10)
            seen.append(ev)
            self.assertLessEqual(len(seen), 10, "too many events: %s" % [e["type"] for e in seen])
        types = [e["type"] for e in seen]
        self.assertEqual(types[0], "ADDED")
        self.assertEqual(types[-1], "DELETED")
        self.assertTrue(all(t == "MODIFIED" for t in types[1:-1]), types)
        self.assertTrue(all(e["object"]["metadata"]["name"] == "brave-dolphin" for e in seen))
        self.assertTrue(all(e["object"]["kind"] == "Deployment" for e in seen))
        rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in seen]
        self.assertEqual(rvs, sorted(rvs))
        self.assertTrue(rvs[0] > int(rv))
        self.assertEqual(seen[1]["object"]["metadata"]["annotations"]["spark-gateway/last-activity"],
                         "2024-01-01T00:00:00Z")

        bm = w.wait_for(lambda e: e["type"] == "BOOKMARK", timeout=5)
        self.assertEqual(bm["object"]["kind"], "Deployment")
        self.assertGreaterEqual(int(bm["object"]["metadata"]["resourceVersion"]), rvs[-1])

        # Resume from the RV of the first event: exactly the later ones come again, in order.
        w2 = self.watch(DEPLOYMENTS, resourceVersion=str(rvs[0]), labelSelector="app.kubernetes.io/part-of=spark")
        again = [w2.wait_for(lambda e: True, timeout=5) for _ in rvs[1:]]
        self.assertEqual([int(e["object"]["metadata"]["resourceVersion"]) for e in again], rvs[1:])

        # Without a resourceVersion a watch starts with the current state as ADDED events.
        w3 = self.watch(DEPLOYMENTS)
        first = w3.wait_for(lambda e: True, timeout=5)
        self.assertEqual(first["type"], "ADDED")
        self.assertIn(first["object"]["metadata"]["name"], ("not-matching", "other"))

        # timeoutSeconds ends the stream cleanly.
        w4 = self.watch(DEPLOYMENTS, resourceVersion=str(self.api.resource_version), timeoutSeconds="1")
        self.assertTrue(w4.ended.wait(5), "watch with timeoutSeconds=1 did not end")
        self.assertTrue(w4.clean)

    def test_watch_label_selector_turns_unmatching_update_into_deleted(self):
        # No kubelet: its status updates (MODIFIED, still matching) would race the label patch.
        self.start(kubelet=False)
        self.api.create_deployment("brave-dolphin")
        rv = self.c.request("GET", DEPLOYMENTS).json["metadata"]["resourceVersion"]
        w = self.watch(DEPLOYMENTS, resourceVersion=rv, labelSelector="app.kubernetes.io/part-of=spark")
        self.api.patch("deployments", "brave-dolphin", {"metadata": {"labels": {"app.kubernetes.io/part-of": None}}})
        ev = w.wait_for(lambda e: True, timeout=5)
        self.assertEqual(ev["type"], "DELETED")
        self.assertEqual(ev["object"]["metadata"]["labels"]["app.kubernetes.io/part-of"], "spark")
        self.assertEqual(ev["object"]["metadata"]["resourceVersion"], str(self.api.resource_version))

    def test_watch_from_compacted_resource_version_gets_410_error_event(self):
        self.start(kubelet=False)
        rv = self.c.request("GET", DEPLOYMENTS).json["metadata"]["resourceVersion"]
        self.api.create_deployment("brave-dolphin")
        floor = self.api.compact()
        w = self.watch(DEPLOYMENTS, resourceVersion=rv, allowWatchBookmarks="true")
        # kube-apiserver answers 200 and reports the expiry as an ERROR event (cacher.go).
        self.assertEqual(w.status, 200)
        ev = w.wait_for(lambda e: True, timeout=5)
        self.assertEqual(ev["type"], "ERROR")
        self.assertEqual(ev["object"], {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                        "message": "too old resource version: %s (%d)" % (rv, floor),
                                        "reason": "Expired", "code": 410})
        self.assertTrue(w.ended.wait(5))
        # A relist gives an RV that can be watched again.
        rv2 = self.c.request("GET", DEPLOYMENTS).json["metadata"]["resourceVersion"]
        w2 = self.watch(DEPLOYMENTS, resourceVersion=rv2)
        self.api.scale("brave-dolphin", 2)
        self.assertEqual(w2.wait_for(lambda e: True, timeout=5)["type"], "MODIFIED")
        # Open watches survive a compaction; expire_watches() makes them fail like a lost etcd watch.
        self.api.compact()
        self.api.scale("brave-dolphin", 3)
        self.assertEqual(w2.wait_for(lambda e: True, timeout=5)["object"]["spec"]["replicas"], 3)
        self.api.faults.expire_watches()
        err = w2.wait_for(lambda e: True, timeout=5)
        self.assertEqual((err["type"], err["object"]["code"], err["object"]["reason"]), ("ERROR", 410, "Expired"))

    # -- writes ---------------------------------------------------------------------------

    def test_merge_patch_null_deletes_annotation_and_bumps_generation(self):
        self.start(kubelet=False)
        d = self.api.create_deployment("brave-dolphin", annotations={
            "spark-gateway/keep-awake-until": "2030-01-01T00:00:00Z", "spark-gateway/port": "4022"})
        self.assertEqual(d["metadata"]["generation"], 1)
        r = self.c.request("PATCH", DEPLOYMENTS + "/brave-dolphin",
                           {"metadata": {"annotations": {"spark-gateway/keep-awake-until": None,
                                                         "spark-gateway/last-activity": "2024-05-01T10:00:00Z"}}},
                           content_type=MERGE)
        self.assertEqual(r.status, 200, r.body)
        ann = r.json["metadata"]["annotations"]
        self.assertEqual(ann, {"spark-gateway/port": "4022", "spark-gateway/last-activity": "2024-05-01T10:00:00Z"})
        self.assertEqual(r.json["metadata"]["generation"], 2)  # annotations bump a Deployment's generation
        self.assertEqual(r.json["kind"], "Deployment")
        # The same patch again changes nothing: same resourceVersion, no event.
        rv = r.json["metadata"]["resourceVersion"]
        r2 = self.c.request("PATCH", DEPLOYMENTS + "/brave-dolphin",
                            {"metadata": {"annotations": {"spark-gateway/keep-awake-until": None}}})
        self.assertEqual(r2.json["metadata"]["resourceVersion"], rv)
        # Unsupported patch types are 415 with the apiserver's message.
        r3 = self.c.request("PATCH", DEPLOYMENTS + "/brave-dolphin", {"spec": {}}, content_type="application/json")
        self.assertEqual(r3.status, 415)
        self.assertEqual(r3.json["reason"], "UnsupportedMediaType")
        self.assertEqual(r3.json["message"], "the body of the request was in an unknown format - accepted media "
                         "types include: application/json-patch+json, application/merge-patch+json, "
                         "application/strategic-merge-patch+json, application/apply-patch+yaml")
        # Negative replicas are Invalid (422) with field causes.
        r4 = self.c.request("PATCH", DEPLOYMENTS + "/brave-dolphin", {"spec": {"replicas": -1}})
        self.assertEqual(r4.status, 422)
        self.assertEqual(r4.json["reason"], "Invalid")
        self.assertEqual(r4.json["message"], 'Deployment.apps "brave-dolphin" is invalid: spec.replicas: '
                                             'Invalid value: -1: must be greater than or equal to 0')
        self.assertEqual(r4.json["details"]["causes"], [{"reason": "FieldValueInvalid", "field": "spec.replicas",
                                                          "message": "Invalid value: -1: must be greater than or "
                                                                     "equal to 0"}])
        # POST of an existing name: AlreadyExists.
        body = self.api.get("deployments", "brave-dolphin")
        del body["metadata"]["resourceVersion"]
        r5 = self.c.request("POST", DEPLOYMENTS, body)
        self.assertEqual((r5.status, r5.json["reason"], r5.json["message"]),
                         (409, "AlreadyExists", 'deployments.apps "brave-dolphin" already exists'))
        # Another method on a named object: 405.
        r6 = self.c.request("POST", DEPLOYMENTS + "/brave-dolphin", {})
        self.assertEqual((r6.status, r6.json["reason"]), (405, "MethodNotAllowed"))

    def test_resource_version_precondition_conflicts(self):
        self.start()
        d = self.api.create_deployment("brave-dolphin", replicas=1)
        stale = d["metadata"]["resourceVersion"]
        self.api.annotate("deployments", "brave-dolphin", **{"spark-gateway/last-activity": "2024-05-01T10:00:00Z"})
        # The gateway's sleep: scale to 0 with the RV it decided on. Someone wrote since -> 409.
        r = self.c.request("PATCH", DEPLOYMENTS + "/brave-dolphin/scale",
                           {"metadata": {"resourceVersion": stale}, "spec": {"replicas": 0}})
        self.assertEqual(r.status, 409, r.body)
        self.assertEqual(r.json, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                  "message": CONFLICT_MSG, "reason": "Conflict",
                                  "details": {"name": "brave-dolphin", "group": "apps", "kind": "deployments"},
                                  "code": 409})
        self.assertEqual(self.api.get("deployments", "brave-dolphin")["spec"]["replicas"], 1)
        # Same on the main resource, and on PUT.
        r = self.c.request("PATCH", DEPLOYMENTS + "/brave-dolphin", {"metadata": {"resourceVersion": stale}})
        self.assertEqual((r.status, r.json["message"]), (409, CONFLICT_MSG))
        cur = self.api.get("deployments", "brave-dolphin")
        old = dict(cur, metadata=dict(cur["metadata"], resourceVersion=stale))
        r = self.c.request("PUT", DEPLOYMENTS + "/brave-dolphin", old)
        self.assertEqual((r.status, r.json["reason"]), (409, "Conflict"))
        # With the current RV it goes through.
        r = self.c.request("PATCH", DEPLOYMENTS + "/brave-dolphin/scale",
                           {"metadata": {"resourceVersion": cur["metadata"]["resourceVersion"]},
                            "spec": {"replicas": 0}})
        self.assertEqual(r.status, 200, r.body)
        # Fault: a storm of conflicts on every write with a precondition; writes without pass.
        self.api.faults.conflict_on_precondition = True
        cur = self.api.get("deployments", "brave-dolphin")
        r = self.c.request("PATCH", DEPLOYMENTS + "/brave-dolphin/scale",
                           {"metadata": {"resourceVersion": cur["metadata"]["resourceVersion"]},
                            "spec": {"replicas": 1}})
        self.assertEqual((r.status, r.json["message"]), (409, CONFLICT_MSG))
        r = self.c.request("PATCH", DEPLOYMENTS + "/brave-dolphin/scale", {"spec": {"replicas": 1}})
        self.assertEqual(r.status, 200)

    def test_resource_version_must_be_a_string(self):
        # ObjectMeta.ResourceVersion is a Go string: a number does not decode. A client that
        # sends {"resourceVersion": 1234} gets an error from kube-apiserver, not a precondition.
        self.start(kubelet=False)
        d = self.api.create_deployment("brave-dolphin", replicas=1)
        rv = int(d["metadata"]["resourceVersion"])
        unmarshal = ("json: cannot unmarshal number into Go struct field ObjectMeta.metadata.resourceVersion of "
                     "type string")
        for path in (DEPLOYMENTS + "/brave-dolphin", DEPLOYMENTS + "/brave-dolphin/scale"):
            r = self.c.request("PATCH", path, {"metadata": {"resourceVersion": rv}, "spec": {"replicas": 0}})
            self.assertEqual((r.status, r.json["reason"]), (422, "Invalid"), r.body)
            # NewInvalid(schema.GroupKind{}, "", ...): "%s %q is invalid" with an empty kind.
            self.assertTrue(r.json["message"].startswith(' "" is invalid: patch: Invalid value: "{'), r.json["message"])
            self.assertTrue(r.json["message"].endswith(": " + unmarshal), r.json["message"])
            self.assertEqual([(c["reason"], c["field"]) for c in r.json["details"]["causes"]],
                             [("FieldValueInvalid", "patch")])
        cur = self.api.get("deployments", "brave-dolphin")
        r = self.c.request("PUT", DEPLOYMENTS + "/brave-dolphin",
                           dict(cur, metadata=dict(cur["metadata"], resourceVersion=rv)))
        self.assertEqual((r.status, r.json["reason"], r.json["message"]),
                         (400, "BadRequest", 'Deployment in version "v1" cannot be handled as a Deployment: ' + unmarshal))
        r = self.c.request("PATCH", DEPLOYMENTS + "/brave-dolphin/scale", {"spec": {"replicas": "1"}})
        self.assertEqual((r.status, r.json["reason"]), (422, "Invalid"))
        self.assertTrue(r.json["message"].endswith("json: cannot unmarshal string into Go struct field "
                                                  "ScaleSpec.spec.replicas of type int32"), r.json["message"])
        self.assertEqual(self.api.get("deployments", "brave-dolphin")["spec"]["replicas"], 1, "nothing applied")
        # As a string, the same precondition works.
        r = self.c.request("PATCH", DEPLOYMENTS + "/brave-dolphin/scale",
                           {"metadata": {"resourceVersion": str(rv)}, "spec": {"replicas": 0}})
        self.assertEqual(r.status, 200, r.body)

    def test_scale_subresource_omits_zero_replicas(self):
        self.start(kubelet=False)
        self.api.create_deployment("brave-dolphin", replicas=0)
        r = self.c.request("GET", DEPLOYMENTS + "/brave-dolphin/scale")
        self.assertEqual(r.status, 200)
        scale = r.json
        self.assertEqual((scale["kind"], scale["apiVersion"]), ("Scale", "autoscaling/v1"))
        self.assertEqual(scale["spec"], {})  # ScaleSpec.replicas is omitempty
        self.assertEqual(scale["status"], {"replicas": 0, "selector": "app.kubernetes.io/instance=brave-dolphin"})
        dep = self.c.request("GET", DEPLOYMENTS + "/brave-dolphin").json
        self.assertEqual(dep["spec"]["replicas"], 0)  # DeploymentSpec.replicas is *int32: 0 is written
        self.assertNotIn("replicas", dep["status"])  # DeploymentStatus counters are omitempty
        self.assertEqual(scale["metadata"]["resourceVersion"], dep["metadata"]["resourceVersion"])
        self.assertEqual(scale["metadata"]["uid"], dep["metadata"]["uid"])

        r = self.c.request("PATCH", DEPLOYMENTS + "/brave-dolphin/scale", {"spec": {"replicas": 1}})
        self.assertEqual((r.status, r.json["spec"]), (200, {"replicas": 1}))
        dep2 = self.c.request("GET", DEPLOYMENTS + "/brave-dolphin").json
        self.assertEqual(dep2["spec"]["replicas"], 1)
        self.assertEqual(dep2["metadata"]["generation"], dep["metadata"]["generation"] + 1)
        r = self.c.request("PUT", DEPLOYMENTS + "/brave-dolphin/scale",
                           {"apiVersion": "autoscaling/v1", "kind": "Scale",
                            "metadata": {"name": "brave-dolphin", "namespace": "spark"}, "spec": {}})
        self.assertEqual((r.status, r.json["spec"]), (200, {}))
        self.assertEqual(self.api.get("deployments", "brave-dolphin")["spec"]["replicas"], 0)
        r = self.c.request("PATCH", DEPLOYMENTS + "/brave-dolphin/scale", {"spec": {"replicas": -2}})
        self.assertEqual((r.status, r.json["message"]),
                         (422, 'Scale.autoscaling "brave-dolphin" is invalid: spec.replicas: Invalid value: -2: '
                               'must be greater than or equal to 0'))
        self.assertEqual(len(self.api.scale_requests("brave-dolphin")), 3)
        self.assertEqual(self.api.scale_requests("brave-dolphin")[0].content_type, MERGE)
        self.assertEqual(self.api.scale_requests("brave-dolphin")[0].json, {"spec": {"replicas": 1}})

    # -- authentication and authorization -------------------------------------------------

    def test_401_403_404_and_token_rotation(self):
        self.start(kubelet=False)
        unauth = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
        r = self.c.request("GET", DEPLOYMENTS, token="")
        self.assertEqual((r.status, r.json), (401, unauth))
        r = self.c.request("GET", DEPLOYMENTS, token="not-a-token")
        self.assertEqual((r.status, r.json), (401, unauth))
        r = self.c.request("GET", "/apis/apps/v1/namespaces/default/deployments")
        self.assertEqual(r.status, 403)
        self.assertEqual(r.json["message"], 'deployments.apps is forbidden: User "system:serviceaccount:spark:'
                         'spark-gateway" cannot list resource "deployments" in API group "apps" in the '
                         'namespace "default"')
        self.assertEqual((r.json["reason"], r.json["details"]), ("Forbidden", {"group": "apps", "kind": "deployments"}))
        r = self.c.request("PATCH", "/apis/apps/v1/namespaces/default/deployments/x/scale", {"spec": {}})
        self.assertEqual(r.json["message"], 'deployments.apps "x" is forbidden: User "system:serviceaccount:spark:'
                         'spark-gateway" cannot patch resource "deployments/scale" in API group "apps" in the '
                         'namespace "default"')
        r = self.c.request("GET", "/api/v1/pods")
        self.assertEqual(r.json["message"], 'pods is forbidden: User "system:serviceaccount:spark:spark-gateway" '
                         'cannot list resource "pods" in API group "" at the cluster scope')
        self.api.deny("create", "events")
        r = self.c.request("POST", "/api/v1/namespaces/spark/events", {"metadata": {"name": "e"}})
        self.assertEqual((r.status, r.json["reason"]), (403, "Forbidden"))
        r = self.c.request("GET", DEPLOYMENTS + "/no-such-spark")
        self.assertEqual((r.status, r.json), (404, {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": 'deployments.apps "no-such-spark" not found', "reason": "NotFound",
            "details": {"name": "no-such-spark", "group": "apps", "kind": "deployments"}, "code": 404}))
        r = self.c.request("GET", "/api/v1/namespaces/spark/pods/nope")
        self.assertEqual(r.json["message"], 'pods "nope" not found')
        self.assertEqual(r.json["details"], {"name": "nope", "kind": "pods"})
        # Token rotation: the old token stops working, the new one (also in the file) works.
        old = self.k8s.token
        new = self.api.rotate_token(self.k8s.token_file)
        with open(self.k8s.token_file) as f:
            self.assertEqual(f.read(), new)
        self.assertEqual(self.c.request("GET", DEPLOYMENTS, token=old).status, 401)
        self.assertEqual(self.c.request("GET", DEPLOYMENTS, token=new).status, 200)
        # Refusing one client (partition tests).
        self.api.faults.refuse_token(new, "forbidden")
        self.assertEqual(self.c.request("GET", DEPLOYMENTS, token=new).status, 403)
        self.api.faults.refuse_token(new, "close")
        with self.assertRaises(Exception):
            self.c.request("GET", DEPLOYMENTS, token=new, timeout=5)
        self.api.faults.unrefuse_token(new)
        self.assertEqual(self.c.request("GET", DEPLOYMENTS, token=new).status, 200)

    def test_https_with_generated_ca_and_client_certificate(self):
        self.start(tls=True, kubelet=False)
        self.assertTrue(self.k8s.url.startswith("https://%s:" % self.host))
        self.assertTrue(os.path.isfile(self.k8s.ca_file))
        self.api.create_deployment("brave-dolphin")
        r = self.c.request("GET", DEPLOYMENTS)
        self.assertEqual((r.status, [i["metadata"]["name"] for i in r.json["items"]]), (200, ["brave-dolphin"]))
        # Without the CA the certificate is not trusted.
        ctx = ssl.create_default_context()
        with socket.create_connection((self.host, self.api.port), timeout=5) as raw:
            with self.assertRaises(ssl.SSLCertVerificationError):
                ctx.wrap_socket(raw, server_hostname=self.host)
        # A client certificate authenticates as its CN.
        cert = self.api.client_cert()
        c2 = harness.import_k8s_double().ApiClient(self.api.url, ca_file=self.k8s.ca_file, cert=cert)
        self.assertEqual(c2.request("GET", DEPLOYMENTS).status, 200)
        self.assertEqual(c2.request("GET", "/apis/apps/v1/namespaces/default/deployments").status, 403)
        kubeconfig = self.k8s.kubeconfig()
        with open(kubeconfig) as f:
            text = f.read()
        self.assertIn("certificate-authority: %s" % self.k8s.ca_file, text)
        self.assertIn("server: %s" % self.api.url, text)

    # -- the fake kubelet -----------------------------------------------------------------

    def test_kubelet_runs_a_real_sshd_and_tears_it_down_on_scale_to_zero(self):
        self.start()
        target_port = harness.free_port(self.host)
        self.api.create_deployment("brave-dolphin", replicas=0, target_port=target_port,
                                   annotations={"spark-gateway/target-port": str(target_port)})
        w = self.watch(PODS, allowWatchBookmarks="true")
        r = self.c.request("PATCH", DEPLOYMENTS + "/brave-dolphin/scale", {"spec": {"replicas": 1}})
        self.assertEqual(r.status, 200)
        added = w.wait_for(lambda e: e["type"] == "ADDED", timeout=10)["object"]
        name = added["metadata"]["name"]
        self.assertRegex(name, r"^brave-dolphin-[bcdfghjklmnpqrstvwxz2456789]+-[bcdfghjklmnpqrstvwxz2456789]{5}$")
        self.assertEqual(added["status"]["phase"], "Pending")
        self.assertEqual(added["metadata"]["labels"]["app.kubernetes.io/instance"], "brave-dolphin")
        self.assertIn("pod-template-hash", added["metadata"]["labels"])
        running = w.wait_for(lambda e: e["type"] == "MODIFIED" and ready(e["object"]), timeout=15)["object"]
        ip = running["status"]["podIP"]
        self.assertTrue(ip.startswith("127.") and ip != self.host, ip)
        self.assertEqual(running["status"]["phase"], "Running")
        self.assertTrue(running["status"]["containerStatuses"][0]["ready"])
        with socket.create_connection((ip, target_port), timeout=5) as s:
            s.settimeout(5)
            self.assertTrue(s.recv(64).startswith(b"SSH-2.0-"))
        sshd = self.k8s.kubelet.sshd_of(name)
        self.assertTrue(harness.is_alive(sshd.pid))
        self.assertIn(sshd.pid, self.leftover_pids())  # tagged: the harness teardown would find it

        def dep_status():
            return self.c.request("GET", DEPLOYMENTS + "/brave-dolphin").json

        dep = wait_until(lambda: (lambda d: d if d["status"].get("readyReplicas") == 1 else None)(dep_status()),
                         5, "deployment status readyReplicas 1")
        st = dep["status"]
        self.assertEqual((st["replicas"], st["availableReplicas"], st["observedGeneration"]),
                         (1, 1, dep["metadata"]["generation"]))

        r = self.c.request("PATCH", DEPLOYMENTS + "/brave-dolphin/scale", {"spec": {"replicas": 0}})
        self.assertEqual(r.status, 200)
        term = w.wait_for(lambda e: e["type"] == "MODIFIED" and e["object"]["metadata"].get("deletionTimestamp"),
                          timeout=10)["object"]
        self.assertEqual(term["metadata"]["name"], name)
        self.assertIn("deletionGracePeriodSeconds", term["metadata"])
        gone = w.wait_for(lambda e: e["type"] == "DELETED", timeout=10)["object"]
        self.assertEqual(gone["metadata"]["name"], name)
        self.assertFalse(harness.is_alive(sshd.pid))
        self.assertTrue(harness.tcp_connect_refused(ip, target_port))
        self.assertEqual(self.c.request("GET", PODS + "/" + name).status, 404)
        dep = wait_until(lambda: (lambda d: d if "replicas" not in d["status"] else None)(dep_status()),
                         5, "deployment status replicas omitted at 0")
        self.assertNotIn("readyReplicas", dep["status"])
        self.assertEqual(self.k8s.kubelet.errors, [])

    def test_pods_are_owned_through_a_replicaset_by_uid(self):
        # The Deployment controller makes a ReplicaSet per template, owned by the Deployment;
        # the ReplicaSet owns the pods (controller ownerReferences, by UID). A pod created directly
        # with the same labels is nobody's; a re-created Deployment of the same name is another owner.
        self.start()
        RS = "/apis/apps/v1/namespaces/spark/replicasets"
        target_port = harness.free_port(self.host)
        dep = self.api.create_deployment("brave-dolphin", replicas=0, target_port=target_port,
                                         annotations={"spark-gateway/target-port": str(target_port)})
        rsw = self.watch(RS, allowWatchBookmarks="true")
        added = rsw.wait_for(lambda e: e["type"] == "ADDED", timeout=10)["object"]
        h = added["metadata"]["labels"]["pod-template-hash"]
        self.assertEqual(added["metadata"]["name"], "brave-dolphin-" + h)
        self.assertEqual(added["metadata"]["ownerReferences"],
                         [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "brave-dolphin",
                           "uid": dep["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}])
        self.assertEqual(added["spec"]["replicas"], 0, "a sleeping Deployment's ReplicaSet is at 0, and says so")
        self.assertEqual(added["spec"]["selector"]["matchLabels"],
                         {"app.kubernetes.io/instance": "brave-dolphin", "pod-template-hash": h})
        self.assertEqual(added["status"].get("replicas"), 0, "ReplicaSetStatus.replicas is not omitempty")
        self.assertNotIn("readyReplicas", added["status"], "the other counters are")
        bm = rsw.wait_for(lambda e: e["type"] == "BOOKMARK", timeout=5)["object"]
        self.assertEqual(bm["kind"], "ReplicaSet")

        pw = self.watch(PODS)
        self.api.scale("brave-dolphin", 1)
        pod = pw.wait_for(lambda e: e["type"] == "ADDED", timeout=10)["object"]
        rs = self.c.request("GET", RS + "/brave-dolphin-" + h).json
        self.assertEqual(pod["metadata"]["ownerReferences"],
                         [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs["metadata"]["name"],
                           "uid": rs["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}])
        self.assertEqual(rs["spec"]["replicas"], 1)
        self.assertEqual(rs["metadata"]["generation"], 2, "the scale changed the ReplicaSet's spec")
        self.ready_pod("brave-dolphin")
        wait_until(lambda: self.c.request("GET", RS + "/brave-dolphin-" + h).json["status"].get("readyReplicas") == 1,
                   10, "the ReplicaSet's status to count its ready pod")

        # A pod made directly with the spark's labels: not adopted (no pod-template-hash), not run.
        labels = dict(dep["spec"]["template"]["metadata"]["labels"])
        r = self.c.request("POST", PODS, {"apiVersion": "v1", "kind": "Pod",
                                          "metadata": {"name": "stray", "labels": labels},
                                          "spec": {"containers": [{"name": "x", "image": "x:1"}]}})
        self.assertEqual(r.status, 201, r.body)
        self.assertNotIn("ownerReferences", r.json["metadata"])

        # Deleted and created again under the same name: the old ReplicaSet and pod go with the
        # old UID, the new Deployment gets its own.
        old_pod = pod["metadata"]["name"]
        self.api.delete("deployments", "brave-dolphin")
        dep2 = self.api.create_deployment("brave-dolphin", replicas=1, target_port=target_port,
                                          annotations={"spark-gateway/target-port": str(target_port)})

        def new_rs():
            got = self.c.request("GET", RS + "/brave-dolphin-" + h)
            if got.status != 200:
                return None
            return got.json if got.json["metadata"]["ownerReferences"][0]["uid"] == dep2["metadata"]["uid"] else None
        rs2 = wait_until(new_rs, 10, "a ReplicaSet owned by the new Deployment")
        pod2 = self.ready_pod("brave-dolphin", other_than=old_pod)
        self.assertEqual(pod2["metadata"]["ownerReferences"][0]["uid"], rs2["metadata"]["uid"])
        wait_until(lambda: self.c.request("GET", PODS + "/" + old_pod).status == 404, 10, "the old pod to go")
        self.assertEqual(self.c.request("GET", PODS + "/stray").status, 200, "nobody's pod is left alone")
        self.assertEqual([rs["metadata"]["name"] for rs in self.c.request("GET", RS).json["items"]],
                         ["brave-dolphin-" + h])

        # The Deployment's deletion takes its ReplicaSet along.
        self.api.delete("deployments", "brave-dolphin")
        wait_until(lambda: self.c.request("GET", RS).json["items"] == [], 10, "the ReplicaSet to be collected")

    def ready_pod(self, deployment, other_than=None, timeout=15):
        """The deployment's live pod once Ready (and not `other_than`, a pod name)."""
        kl = self.k8s.kubelet

        def find():
            p = kl.pod_of(deployment)
            return p if p and ready(p) and p["metadata"]["name"] != other_than else None
        return wait_until(find, timeout, "a ready pod of %s" % deployment)

    def pod_session(self, pod, port):
        """A real ssh client holding a session (a remote `sleep 600`) on the pod's sshd, directly
        (no gateway); returns it once the remote command runs, with the pid of that sleep."""
        ip = pod["status"]["podIP"]
        p = harness.BackgroundProcess(self.ssh_args(None, "echo session-up; exec sleep 600", port=port, host=ip),
                                      self.child_env())
        self.background.append(p)
        p.wait_output("session-up", 30)
        sshd = self.k8s.kubelet.sshd_of(pod["metadata"]["name"])

        def remote_sleep():
            for pid in proctree.descendants(sshd.pid):
                if (harness.proc_cmdline(pid) or "").startswith("sleep 600"):
                    return pid
            return None
        sleep_pid = wait_until(remote_sleep, 10, "the remote sleep under the pod's sshd")
        return p, sleep_pid

    def assert_session_killed(self, session, processes, what, timeout=10):
        """The ssh client exits (the connection is cut) within `timeout`, and every process
        recorded in `processes` ({pid: ProcInfo}) is gone."""
        rc = session.wait(timeout=timeout)
        self.assertNotEqual(rc, 0, "%s: ssh exited 0; stdout=%r stderr=%r" % (what, session.stdout, session.stderr))
        wait_until(lambda: not [i for i in processes.values() if proctree._same_and_alive(i)], 10,
                   lambda: "%s: the pod's processes to be gone; left: %s" % (
                       what, harness.describe_pids([i.pid for i in processes.values()
                                                    if proctree._same_and_alive(i)])))

    def test_terminated_pod_kills_its_ssh_sessions(self):
        # In a cluster a pod's whole process tree dies with it (SIGTERM, SIGKILL after the grace
        # period), so an ssh session into a terminated pod breaks. OpenSSH's per-connection
        # processes call setsid(), so stopping only the listener would leave them running.
        self.start()
        kl = self.k8s.kubelet
        port = harness.free_port(self.host)
        self.api.create_deployment("brave-dolphin", replicas=1, target_port=port,
                                   annotations={"spark-gateway/target-port": str(port)})
        pod = self.ready_pod("brave-dolphin")
        name = pod["metadata"]["name"]
        sshd = kl.sshd_of(name)
        session, sleep_pid = self.pod_session(pod, port)
        snap = proctree.snapshot()
        tree = {p: snap[p] for p in proctree.descendants(sshd.pid, snap)}
        self.assertIn(sleep_pid, tree)
        self.assertTrue([i for i in tree.values() if i.session != snap[sshd.pid].session],
                        "expected the per-connection sshd in a session of its own (setsid), got %r" % tree)
        t0 = time.monotonic()
        r = self.c.request("PATCH", DEPLOYMENTS + "/brave-dolphin/scale", {"spec": {"replicas": 0}})
        self.assertEqual(r.status, 200, r.body)
        self.assert_session_killed(session, tree, "scale to 0")
        self.assertLess(time.monotonic() - t0, 10)
        wait_until(lambda: self.c.request("GET", PODS + "/" + name).status == 404, 10, "the pod to be removed")
        self.assertEqual(harness.find_pids(cmdline_contains=sshd.config), [], "the pod's sshd is still running")
        self.assertEqual(proctree.tagged(sshd.container_tag), set(), "processes of the pod are still running")
        # The container's exit is recorded as the runtime reports it (sshd exits 0 on SIGTERM).
        self.assertEqual(sshd.proc.returncode, 0)

    def test_deleted_pod_dead_sshd_and_stopped_kubelet_take_the_sessions_along(self):
        self.start()
        kl = self.k8s.kubelet
        port = harness.free_port(self.host)
        self.api.create_deployment("brave-dolphin", replicas=1, target_port=port,
                                   annotations={"spark-gateway/target-port": str(port)})

        def tree_of(pod):
            return {p: i for p, i in proctree.container_processes(
                kl.sshd_of(pod["metadata"]["name"]).pid).items()}

        # DELETE of the pod (graceful): the session dies, the controller makes a new pod.
        pod = self.ready_pod("brave-dolphin")
        session, _ = self.pod_session(pod, port)
        tree = tree_of(pod)
        r = self.c.request("DELETE", PODS + "/" + pod["metadata"]["name"])
        self.assertEqual(r.status, 200, r.body)
        self.assertIn("deletionTimestamp", r.json["metadata"])
        self.assert_session_killed(session, tree, "pod deleted")

        # The container's main process dies on its own: the rest of the container goes with it
        # (the runtime kills the cgroup), and restartPolicy Always starts it again.
        pod = self.ready_pod("brave-dolphin", other_than=pod["metadata"]["name"])
        name = pod["metadata"]["name"]
        session, _ = self.pod_session(pod, port)
        sshd = kl.sshd_of(name)
        tree = tree_of(pod)
        os.kill(sshd.pid, signal.SIGKILL)
        self.assert_session_killed(session, tree, "sshd killed")
        pod = wait_until(lambda: (lambda p: p if p and ready(p) and p["metadata"]["name"] == name
                                  and p["status"]["containerStatuses"][0]["restartCount"] == 1 else None)(
            kl.pod_of("brave-dolphin")), 15, "the container to be restarted and ready")
        last = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]
        self.assertEqual(last["exitCode"], 137)  # 128 + SIGKILL, as runtimes report it

        # The kubelet stopping (end of a test) stops every container, sessions included.
        session, _ = self.pod_session(pod, port)
        tree = tree_of(pod)
        kl.stop()
        self.assert_session_killed(session, tree, "kubelet stopped")

    def test_kubelet_failure_scenarios(self):
        self.start()
        kl = self.k8s.kubelet
        kl.crash_interval = 0.2
        kl.pull_retry_interval = 0.2
        for name, scenario in (("pull", "image-pull-failure"), ("crash", "crash-loop"), ("never", "never-ready")):
            kl.set_scenario(name, scenario)
            self.api.create_deployment(name, replicas=1, target_port=harness.free_port(self.host))

        def pod(name):
            return kl.pod_of(name)

        def waiting_reason(p):
            if not p or not p["status"].get("containerStatuses"):
                return None
            return (p["status"]["containerStatuses"][0]["state"].get("waiting") or {}).get("reason")

        wait_until(lambda: waiting_reason(pod("pull")) == "ImagePullBackOff", 10, "ImagePullBackOff")
        p = pod("pull")
        self.assertEqual(p["status"]["phase"], "Pending")
        self.assertIn("Back-off pulling image", p["status"]["containerStatuses"][0]["state"]["waiting"]["message"])
        wait_until(lambda: waiting_reason(pod("pull")) == "ErrImagePull", 10, "ErrImagePull")

        wait_until(lambda: pod("crash") and pod("crash")["status"]["containerStatuses"][0]["restartCount"] >= 2,
                   10, "crash-loop restartCount >= 2")
        wait_until(lambda: waiting_reason(pod("crash")) == "CrashLoopBackOff", 10, "CrashLoopBackOff")
        p = pod("crash")
        self.assertEqual(p["status"]["phase"], "Running")
        self.assertFalse(ready(p))
        self.assertEqual(p["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 1)

        wait_until(lambda: pod("never") and pod("never")["status"]["phase"] == "Running", 10, "never-ready Running")
        p = pod("never")
        self.assertTrue(p["status"]["podIP"].startswith("127."))
        self.assertFalse(ready(p))
        self.assertIsNone(kl.sshd_of(p["metadata"]["name"]))
        self.assertTrue(harness.tcp_connect_refused(p["status"]["podIP"], kl._target_port(
            self.api.get("deployments", "never"))))
        for name in ("pull", "crash", "never"):
            self.assertNotIn("readyReplicas", self.api.get("deployments", name)["status"])
            self.assertEqual(self.api.get("deployments", name)["status"]["unavailableReplicas"], 1)

    # -- faults ---------------------------------------------------------------------------

    def test_faults(self):
        self.start(kubelet=False)
        self.api.create_deployment("brave-dolphin")
        f = self.api.faults
        # The next 2 scale PATCHes fail with 500 InternalError; other calls are unaffected.
        f.fail(count=2, method="PATCH", path=r"/scale$")
        self.assertEqual(self.c.request("GET", DEPLOYMENTS).status, 200)
        for _ in range(2):
            r = self.c.request("PATCH", DEPLOYMENTS + "/brave-dolphin/scale", {"spec": {"replicas": 1}})
            self.assertEqual((r.status, r.json["reason"]), (500, "InternalError"))
        self.assertEqual(self.c.request("PATCH", DEPLOYMENTS + "/brave-dolphin/scale",
                                        {"spec": {"replicas": 1}}).status, 200)
        # Slow: every answer late.
        f.delay = 0.4
        t0 = time.monotonic()
        self.assertEqual(self.c.request("GET", DEPLOYMENTS).status, 200)
        self.assertGreaterEqual(time.monotonic() - t0, 0.4)
        f.delay = 0
        # close_watches() and watch_max_duration end streams cleanly.
        w = self.watch(DEPLOYMENTS, resourceVersion=str(self.api.resource_version))
        f.close_watches()
        self.assertTrue(w.ended.wait(5))
        self.assertTrue(w.clean)
        f.watch_max_duration = 0.3
        w = self.watch(DEPLOYMENTS, resourceVersion=str(self.api.resource_version))
        self.assertTrue(w.ended.wait(5))
        f.watch_max_duration = None
        # Down: connections refused and open watches cut; up: same port, same data.
        w = self.watch(DEPLOYMENTS, resourceVersion=str(self.api.resource_version))
        wait_until(lambda: self.api.active_watches(), 5, "the watch to be open")
        port = self.api.port
        self.api.down()
        self.assertTrue(w.ended.wait(5))
        self.assertFalse(w.clean)
        self.assertTrue(harness.tcp_connect_refused(self.host, port))
        self.api.up()
        self.assertEqual(self.api.port, port)
        r = self.c.request("GET", DEPLOYMENTS + "/brave-dolphin")
        self.assertEqual((r.status, r.json["spec"]["replicas"]), (200, 1))
        # Hang: the request gets no answer until the fault is lifted.
        f.hang = True
        with self.assertRaises(socket.timeout):
            self.c.request("GET", DEPLOYMENTS, timeout=0.5)
        f.hang = False
        self.assertEqual(self.c.request("GET", DEPLOYMENTS).status, 200)
        self.assertGreaterEqual(self.api.counters["watches"], 3)

    def test_watch_lag_delays_events_in_order_while_reads_are_current(self):
        self.start(kubelet=False)
        lag = 1.2
        f = self.api.faults
        self.api.create_deployment("brave-dolphin")
        rv0 = self.c.request("GET", DEPLOYMENTS).json["metadata"]["resourceVersion"]
        f.watch_lag = lag
        # A watch from a revision the lagging cache has not seen yet starts once it has.
        t0 = time.monotonic()
        w = self.watch(DEPLOYMENTS, resourceVersion=rv0, allowWatchBookmarks="true")
        self.assertEqual(w.status, 200)
        self.assertGreaterEqual(time.monotonic() - t0, lag - 0.5)
        # Bookmarks (every 0.3 s) lag as well; once they flow, writes are covered by them.
        w.wait_for(lambda e: e["type"] == "BOOKMARK", timeout=lag + 5)

        def annotate(value):
            t = time.monotonic()
            r = self.c.request("PATCH", DEPLOYMENTS + "/brave-dolphin",
                               {"metadata": {"annotations": {"spark-gateway/last-activity": value}}})
            self.assertEqual(r.status, 200, r.body)
            return t, time.monotonic(), int(r.json["metadata"]["resourceVersion"])

        def activity(obj):
            return (obj["metadata"].get("annotations") or {}).get("spark-gateway/last-activity")

        sent1, answered1, rv1 = annotate("2024-05-01T10:00:01Z")
        # Reads answer from storage: the write is there at once.
        self.assertEqual(activity(self.c.request("GET", DEPLOYMENTS + "/brave-dolphin").json), "2024-05-01T10:00:01Z")
        self.assertEqual(activity(self.c.request("GET", DEPLOYMENTS).json["items"][0]), "2024-05-01T10:00:01Z")
        _, _, rv2 = annotate("2024-05-01T10:00:02Z")
        # The watch gets both, in order, each about `lag` after its commit.
        ev1 = w.wait_for(lambda e: e["type"] == "MODIFIED", timeout=lag + 5)
        i1 = next(i for i, e in enumerate(w.events) if e is ev1)
        self.assertEqual((int(ev1["object"]["metadata"]["resourceVersion"]), activity(ev1["object"])),
                         (rv1, "2024-05-01T10:00:01Z"))
        self.assertGreaterEqual(w.arrivals[i1] - sent1, lag * 0.9, "the event came before the lag")
        self.assertLessEqual(w.arrivals[i1] - answered1, lag + 2.0, "the event came long after the lag")
        ev2 = w.wait_for(lambda e: e["type"] == "MODIFIED", timeout=5)
        self.assertEqual((int(ev2["object"]["metadata"]["resourceVersion"]), activity(ev2["object"])),
                         (rv2, "2024-05-01T10:00:02Z"))
        # Bookmarks lag too: none claims a revision whose event had not been sent before it (the
        # only writes here are to this Deployment, so every revision is one of its events).
        bm = w.wait_for(lambda e: e["type"] == "BOOKMARK", timeout=lag + 5)
        self.assertGreaterEqual(int(bm["object"]["metadata"]["resourceVersion"]), rv2)
        self.assertIn("BOOKMARK", [e["type"] for e in w.events[:i1]], "no bookmark before the event")
        seen = int(rv0)
        for e in list(w.events):
            rv = int(e["object"]["metadata"]["resourceVersion"])
            if e["type"] == "BOOKMARK":
                self.assertLessEqual(rv, seen, "a bookmark overtook the events it covers: %r" % w.events)
            else:
                seen = rv
        # A new watch without a resourceVersion starts from the cache's (stale) state.
        _, _, rv3 = annotate("2024-05-01T10:00:03Z")
        w2 = self.watch(DEPLOYMENTS)
        first = w2.wait_for(lambda e: True, timeout=5)
        self.assertEqual((first["type"], activity(first["object"])), ("ADDED", "2024-05-01T10:00:02Z"))
        nxt = w2.wait_for(lambda e: True, timeout=lag + 5)
        self.assertEqual((nxt["type"], int(nxt["object"]["metadata"]["resourceVersion"])), ("MODIFIED", rv3))
        # Without the lag, events come at once again.
        w.wait_for(lambda e: e["type"] == "MODIFIED", timeout=lag + 5)  # rv3 on the first watch
        f.watch_lag = 0
        sent4, _, rv4 = annotate("2024-05-01T10:00:04Z")
        ev4 = w.wait_for(lambda e: e["type"] == "MODIFIED", timeout=5)
        self.assertEqual(int(ev4["object"]["metadata"]["resourceVersion"]), rv4)
        self.assertLess(w.arrivals[w.events.index(ev4)] - sent4, lag)
        # A cache more than 3 s behind the requested revision: the watch gets the 504 ERROR event
        # (waitUntilFreshAndBlock), which a reflector must survive (relist or retry).
        f.watch_lag = 30
        w3 = self.watch(DEPLOYMENTS, resourceVersion=str(rv4))
        self.assertEqual(w3.status, 200)
        err = w3.wait_for(lambda e: True, timeout=5)
        self.assertEqual((err["type"], err["object"]["code"], err["object"]["reason"]), ("ERROR", 504, "Timeout"))
        self.assertTrue(err["object"]["message"].startswith("Timeout: Too large resource version: %d, current: " % rv4),
                        err["object"]["message"])
        self.assertTrue(w3.ended.wait(5))
        f.reset()
        self.assertEqual(f.watch_lag, 0)

    def test_answer_late_and_hold_narrowed_to_one_call(self):
        # "The scale call timed out but the API server applied it" (answer_late) and "timed out
        # and nothing was applied" (hold), each for exactly one chosen call.
        self.start(kubelet=False)
        self.api.create_deployment("brave-dolphin", replicas=0)
        f = self.api.faults
        scale = DEPLOYMENTS + "/brave-dolphin/scale"

        def quick(method, path, body=None):
            t = time.monotonic()
            r = self.c.request(method, path, body)
            self.assertLess(time.monotonic() - t, 1.0, "%s %s was slowed down" % (method, path))
            return r

        def replicas():
            return self.c.request("GET", DEPLOYMENTS + "/brave-dolphin").json["spec"]["replicas"]

        late = f.answer_late(3.0, count=1, method="PATCH", path=r"/deployments/brave-dolphin/scale$")
        # Other calls, the Deployment itself included, are not slowed down.
        self.assertEqual(quick("GET", scale).status, 200)
        self.assertEqual(quick("PATCH", DEPLOYMENTS + "/brave-dolphin",
                               {"metadata": {"annotations": {"spark-gateway/last-activity": "2024-05-01T10:00:00Z"}}}
                               ).status, 200)
        t = time.monotonic()
        with self.assertRaises(socket.timeout):
            self.c.request("PATCH", scale, {"spec": {"replicas": 1}}, timeout=0.5)
        # Applied although the client timed out: visible before the answer would have come.
        self.assertEqual(replicas(), 1)
        self.assertLess(time.monotonic() - t, 3.0)
        self.assertEqual((late.hits, late.remaining), (1, 0))
        self.assertEqual(self.api.scale_requests("brave-dolphin")[-1].fault, "answer_late")
        # Only that one call: the next scale is answered at once.
        self.assertEqual(quick("PATCH", scale, {"spec": {"replicas": 0}}).status, 200)

        held = f.hold(1.0, count=1, method="PATCH", path=r"/scale$")
        self.assertEqual(quick("PATCH", DEPLOYMENTS + "/brave-dolphin", {"metadata": {"labels": {"x": "y"}}}).status,
                         200)
        with self.assertRaises(socket.timeout):
            self.c.request("PATCH", scale, {"spec": {"replicas": 1}}, timeout=0.3)
        wait_until(lambda: [r for r in self.api.scale_requests("brave-dolphin") if r.fault == "hold, client gone"],
                   5, "the held scale call to be dropped")
        self.assertEqual(replicas(), 0, "a held call whose client went away must not be applied")
        self.assertEqual(held.hits, 1)
        # A held call whose client waits is applied, late.
        f.hold(0.5, count=1, method="PATCH", path=r"/scale$")
        t = time.monotonic()
        r = self.c.request("PATCH", scale, {"spec": {"replicas": 1}}, timeout=5)
        self.assertEqual(r.status, 200, r.body)
        self.assertGreaterEqual(time.monotonic() - t, 0.5)
        self.assertEqual(replicas(), 1)
        self.assertEqual(quick("PATCH", scale, {"spec": {"replicas": 0}}).status, 200)
        # when= narrows by anything in the request, e.g. the body: only a scale-UP fails, and
        # an answer_late rule and a fail rule can select the same call.
        def scale_up(rec):
            return ((rec.json or {}).get("spec") or {}).get("replicas") == 1
        failed = f.fail(count=1, method="PATCH", when=scale_up, code=503, retry_after=1)
        self.assertEqual(quick("PATCH", scale, {"spec": {"replicas": 0}}).status, 200)
        r = quick("PATCH", scale, {"spec": {"replicas": 1}})
        self.assertEqual((r.status, r.header("Retry-After"), failed.hits), (503, "1", 1))
        self.assertEqual(replicas(), 0)
        # Without a count, every matching call until removed; reset() removes the rules.
        f.answer_late(0.6, method="GET", path=r"/scale$")
        t = time.monotonic()
        self.assertEqual(self.c.request("GET", scale).status, 200)
        self.assertGreaterEqual(time.monotonic() - t, 0.6)
        f.reset()
        self.assertEqual(quick("GET", scale).status, 200)

    def test_429_and_retry_after_as_kube_apiserver_sends_them(self):
        self.start(kubelet=False)
        self.api.create_deployment("brave-dolphin")
        f = self.api.faults
        scale = DEPLOYMENTS + "/brave-dolphin/scale"
        # Flow control (max-in-flight, API Priority and Fairness) turns a request away with
        # net/http's http.Error: text/plain, not a Status, and Retry-After.
        f.fail(count=1, method="PATCH", path=r"/scale$", code=429)
        r = self.c.request("PATCH", scale, {"spec": {"replicas": 1}})
        self.assertEqual((r.status, r.header("Retry-After"), r.header("Content-Type"), r.body),
                         (429, "1", "text/plain; charset=utf-8", b"Too many requests, please try again later.\n"))
        self.assertEqual(self.api.get("deployments", "brave-dolphin")["spec"]["replicas"], 0, "nothing applied")
        # A Status with details.retryAfterSeconds gets the header too (responsewriters.ErrorNegotiated).
        f.fail(count=1, method="PATCH", path=r"/scale$", code=503, retry_after=2)
        r = self.c.request("PATCH", scale, {"spec": {"replicas": 2}})
        self.assertEqual((r.status, r.header("Retry-After"), r.json["reason"], r.json["details"]),
                         (503, "2", "ServiceUnavailable", {"retryAfterSeconds": 2}))
        f.fail(count=1, code=429, message="the storage is busy", retry_after=3)
        r = self.c.request("GET", scale)
        self.assertEqual((r.status, r.header("Retry-After"), r.json["reason"], r.json["message"]),
                         (429, "3", "TooManyRequests", "the storage is busy"))
        # Errors without retryAfterSeconds carry no Retry-After.
        f.fail(count=1, code=500)
        r = self.c.request("GET", scale)
        self.assertEqual((r.status, r.header("Retry-After")), (500, None))
        # The watch cache's "Too large resource version" (after waiting 3 s) says Retry-After: 1.
        future = self.api.resource_version + 100
        r = self.c.request("GET", DEPLOYMENTS, query={"resourceVersion": str(future)})
        self.assertEqual((r.status, r.header("Retry-After"), r.json["reason"]), (504, "1", "Timeout"))
        self.assertEqual(self.c.request("PATCH", scale, {"spec": {"replicas": 2}}).status, 200)

    # -- events, leases, services ---------------------------------------------------------

    def test_events_leases_services(self):
        self.start(kubelet=False)
        ev = {"apiVersion": "v1", "kind": "Event",
              "metadata": {"name": "brave-dolphin.17c1a2b3c4d5e6f7", "namespace": "spark"},
              "involvedObject": {"kind": "Deployment", "apiVersion": "apps/v1", "namespace": "spark",
                                 "name": "brave-dolphin"},
              "reason": "Woken", "message": "woken by a connection", "type": "Normal", "count": 1,
              "firstTimestamp": "2024-05-01T10:00:00Z", "lastTimestamp": "2024-05-01T10:00:00Z",
              "source": {"component": "spark-gateway"}, "reportingComponent": "spark-gateway",
              "reportingInstance": "spark-gateway-0"}
        r = self.c.request("POST", "/api/v1/namespaces/spark/events", ev)
        self.assertEqual(r.status, 201, r.body)
        self.assertEqual(r.json["reason"], "Woken")
        lst = self.c.request("GET", "/api/v1/namespaces/spark/events",
                             query={"fieldSelector": "involvedObject.name=brave-dolphin"}).json
        self.assertEqual(lst["kind"], "EventList")
        self.assertEqual([e["reason"] for e in lst["items"]], ["Woken"])
        self.assertEqual(self.api.events("brave-dolphin")[0]["source"], {"component": "spark-gateway"})
        bad = dict(ev, metadata={"name": "x"}, involvedObject={"namespace": "other", "name": "y"})
        self.assertEqual(self.c.request("POST", "/api/v1/namespaces/spark/events", bad).status, 422)
        # An Event that repeats is merge-patched (count, lastTimestamp), as client-go's recorder does.
        path = "/api/v1/namespaces/spark/events/brave-dolphin.17c1a2b3c4d5e6f7"
        rv = r.json["metadata"]["resourceVersion"]
        r = self.c.request("PATCH", path, {"count": 2, "lastTimestamp": "2024-05-01T10:05:00Z"}, content_type=MERGE)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual((r.json["count"], r.json["lastTimestamp"], r.json["firstTimestamp"], r.json["message"]),
                         (2, "2024-05-01T10:05:00Z", "2024-05-01T10:00:00Z", "woken by a connection"))
        self.assertNotEqual(r.json["metadata"]["resourceVersion"], rv)
        self.assertEqual([e["count"] for e in self.api.events("brave-dolphin")], [2])
        r = self.c.request("PATCH", "/api/v1/namespaces/spark/events/gone", {"count": 2}, content_type=MERGE)
        self.assertEqual((r.status, r.json["reason"], r.json["message"]), (404, "NotFound", 'events "gone" not found'))
        self.api.deny("patch", "events")
        r = self.c.request("PATCH", path, {"count": 3}, content_type=MERGE)
        self.assertEqual((r.status, r.json["reason"]), (403, "Forbidden"))
        self.assertEqual([e["count"] for e in self.api.events("brave-dolphin")], [2])

        leases = "/apis/coordination.k8s.io/v1/namespaces/spark/leases"
        self.assertEqual(self.c.request("GET", leases + "/spark-gateway-reaper").status, 404)
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": "spark-gateway-reaper"},
                 "spec": {"holderIdentity": "gw-a", "leaseDurationSeconds": 15,
                          "acquireTime": "2024-05-01T10:00:00.000000Z", "renewTime": "2024-05-01T10:00:00.000000Z",
                          "leaseTransitions": 0}}
        r = self.c.request("POST", leases, lease)
        self.assertEqual(r.status, 201)
        created = r.json
        upd = json.loads(json.dumps(created))
        upd["spec"]["renewTime"] = "2024-05-01T10:00:05.000000Z"
        r = self.c.request("PUT", leases + "/spark-gateway-reaper", upd)
        self.assertEqual(r.status, 200)
        r = self.c.request("PUT", leases + "/spark-gateway-reaper", dict(upd, spec=dict(upd["spec"], holderIdentity="gw-b")))
        self.assertEqual((r.status, r.json["message"]), (409, 'Operation cannot be fulfilled on leases.coordination.k8s.io '
                                                              '"spark-gateway-reaper": the object has been modified; please '
                                                              'apply your changes to the latest version and try again'))
        r = self.c.request("POST", leases, lease)
        self.assertEqual((r.status, r.json["reason"]), (409, "AlreadyExists"), "two creating it: one gets 409")
        r = self.c.request("DELETE", leases + "/spark-gateway-reaper")
        self.assertEqual((r.status, r.json["status"], r.json["details"]["kind"]), (200, "Success", "leases"))
        # Leases allow create on update (their strategy's AllowCreateOnUpdate): a PUT to a missing
        # one creates it, unless the body carries a uid (the UID precondition: 409).
        r = self.c.request("PUT", leases + "/spark-gateway-reaper", upd)
        self.assertEqual((r.status, r.json["message"]), (409, 'Operation cannot be fulfilled on leases.coordination.k8s.io '
                                                              '"spark-gateway-reaper": Precondition failed: UID in '
                                                              'precondition: %s, UID in object meta: ' % created["metadata"]["uid"]))
        fresh = {"metadata": {"name": "spark-gateway-reaper", "resourceVersion": "7"}, "spec": {}}
        r = self.c.request("PUT", leases + "/spark-gateway-reaper", fresh)
        self.assertEqual(r.status, 201, r.body)
        self.assertNotEqual(r.json["metadata"]["resourceVersion"], "7")
        r = self.c.request("DELETE", leases + "/spark-gateway-reaper")
        self.assertEqual(r.status, 200)

        svcs = "/api/v1/namespaces/spark/services"
        svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "brave-dolphin"},
               "spec": {"type": "LoadBalancer", "selector": {"app.kubernetes.io/instance": "brave-dolphin"},
                        "ports": [{"name": "ssh", "port": 22, "targetPort": 4022}]}}
        r = self.c.request("POST", svcs, svc)
        self.assertEqual(r.status, 201, r.body)
        self.assertTrue(r.json["spec"]["clusterIP"].startswith("10.96."))
        self.assertTrue(30000 <= r.json["spec"]["ports"][0]["nodePort"] <= 32767)
        r = self.c.request("PATCH", svcs + "/brave-dolphin", {"metadata": {"annotations": {"tailscale.com/hostname": "brave-dolphin"}}})
        self.assertEqual(r.status, 200)
        r = self.c.request("DELETE", svcs + "/brave-dolphin")
        self.assertEqual((r.status, r.json["kind"]), (200, "Service"))

    def test_service_ports_and_finalizers(self):
        """Two ports need names, unique, and distinct (protocol, port), as kube-apiserver checks;
        an object with a finalizer is only marked by DELETE until its last finalizer is removed
        (the Tailscale operator holds the Services it serves this way)."""
        self.start(kubelet=False)
        svcs = "/api/v1/namespaces/spark/services"

        def svc(ports, name="brave-dolphin-ssh"):
            return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                    "spec": {"type": "LoadBalancer", "selector": {"app": "x"}, "ports": ports}}
        r = self.c.request("POST", svcs, svc([{"name": "ssh", "port": 22}, {"port": 3000}]))
        self.assertEqual((r.status, r.json["message"]),
                         (422, 'Service "brave-dolphin-ssh" is invalid: spec.ports[1].name: Required value'))
        r = self.c.request("POST", svcs, svc([{"name": "ssh", "port": 22}, {"name": "ssh", "port": 3000}]))
        self.assertEqual((r.status, r.json["details"]["causes"][0]["field"]), (422, "spec.ports[1].name"))
        self.assertIn('Duplicate value: "ssh"', r.json["message"])
        r = self.c.request("POST", svcs, svc([{"name": "ssh", "port": 22}, {"name": "web", "port": 22}]))
        self.assertEqual((r.status, r.json["details"]["causes"][0]["field"]), (422, "spec.ports[1]"))
        r = self.c.request("POST", svcs, svc([{"name": "Web", "port": 3000}]))
        self.assertEqual(r.status, 422)
        self.assertIn("RFC 1123 label", r.json["message"])
        r = self.c.request("POST", svcs, svc([{"name": "ssh", "port": 22}, {"name": "3000", "port": 3000}]))
        self.assertEqual(r.status, 201, r.body)

        path = svcs + "/brave-dolphin-ssh"
        r = self.c.request("PATCH", path, {"metadata": {"finalizers": ["tailscale.com/finalizer"]}},
                           content_type=MERGE)
        self.assertEqual(r.status, 200, r.body)
        r = self.c.request("DELETE", path)
        self.assertEqual(r.status, 200, r.body)
        self.assertTrue(r.json["metadata"]["deletionTimestamp"])
        self.assertEqual(r.json["metadata"]["deletionGracePeriodSeconds"], 0)
        held = self.api.get("services", "brave-dolphin-ssh")
        self.assertEqual(held["metadata"]["finalizers"], ["tailscale.com/finalizer"], "still there, marked")
        self.assertEqual(self.c.request("DELETE", path).json["metadata"]["resourceVersion"],
                         held["metadata"]["resourceVersion"], "a second DELETE changes nothing")
        r = self.c.request("POST", svcs, svc([{"name": "ssh", "port": 22}]))
        self.assertEqual((r.status, r.json["reason"]), (409, "AlreadyExists"))
        r = self.c.request("PATCH", path, {"metadata": {"finalizers": ["tailscale.com/finalizer", "x/y"]}},
                           content_type=MERGE)
        self.assertEqual(r.status, 422)
        self.assertIn("no new finalizers can be added if the object is being deleted", r.json["message"])
        r = self.c.request("PATCH", path, {"metadata": {"finalizers": None}}, content_type=MERGE)
        self.assertEqual(r.status, 200, r.body)
        self.assertIsNone(self.api.get("services", "brave-dolphin-ssh"), "the last finalizer gone: deleted")
        self.assertEqual([r.method for r in self.api.requests(resource="services", name="brave-dolphin-ssh")
                          if r.method == "DELETE"], ["DELETE", "DELETE"])


if __name__ == "__main__":
    harness.main()
