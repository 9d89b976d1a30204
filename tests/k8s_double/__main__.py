"""Standalone API double + fake kubelet, for demos and manual runs of the gateway.

    python3 -m tests.k8s_double --listen 127.0.0.1:8001 \\
        --deployment brave-dolphin:port=4022 --deployment calm-otter:port=4023,scenario=crash-loop

Each --deployment is NAME[:key=value,...] with keys replicas (default 0), port (the gateway
listen port annotation spark-gateway/port), target-port (sshd port in the pod; 22 as root,
else 2222), scenario (normal, image-pull-failure, crash-loop, never-ready), start-delay (s),
idle-timeout (annotation spark-gateway/idle-timeout).
Pods run a real sshd on a 127.x.y.z address that accepts the keys in --authorized-keys
(default: ~/.ssh/*.pub). The token, the CA (with --tls) and a kubeconfig are written to the
work directory and printed. Ctrl-C stops everything.
"""

import argparse
import glob
import os
import signal
import subprocess
import sys
import tempfile
import threading

from . import FakeKubelet, KubeApiDouble, LoopbackIpAllocator, SshdLauncher


def _deployment_arg(text):
    name, _, opts = text.partition(":")
    d = {"name": name}
    for kv in filter(None, opts.split(",")):
        k, _, v = kv.partition("=")
        d[k.strip()] = v.strip()
    return d


def main(argv=None):
    p = argparse.ArgumentParser(prog="python3 -m tests.k8s_double", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", default="127.0.0.1:8001", help="loopback host:port (default %(default)s)")
    p.add_argument("--namespace", default="spark")
    p.add_argument("--tls", action="store_true", help="serve HTTPS with a fresh CA")
    p.add_argument("--token", help="the service account token (default: random)")
    p.add_argument("--no-auth", action="store_true", help="accept requests without a token (kubectl proxy style)")
    p.add_argument("--deployment", action="append", type=_deployment_arg, default=[])
    p.add_argument("--authorized-keys", help="public keys the pods' sshd accept (default ~/.ssh/*.pub)")
    p.add_argument("--bookmark-interval", type=float, default=60.0)
    p.add_argument("--start-delay", type=float, default=1.0, help="seconds from pod sandbox to running")
    p.add_argument("--workdir", help="where keys, token, CA and sshd configs go (default: a temp dir)")
    p.add_argument("--no-kubelet", action="store_true", help="API only; no pods are ever started")
    args = p.parse_args(argv)

    host, _, port = args.listen.rpartition(":")
    workdir = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="k8s-double-"))
    os.makedirs(workdir, exist_ok=True)
    api = KubeApiDouble(host=host, port=int(port), namespace=args.namespace, tls=args.tls,
                        require_auth=not args.no_auth, token=args.token,
                        bookmark_interval=args.bookmark_interval, workdir=os.path.join(workdir, "api"))
    api.start()
    kubelet = None
    default_target = 22 if os.geteuid() == 0 else 2222
    try:
        for d in args.deployment:
            annotations = {}
            if "port" in d:
                annotations["spark-gateway/port"] = d["port"]
            if "idle-timeout" in d:
                annotations["spark-gateway/idle-timeout"] = d["idle-timeout"]
            target = int(d.get("target-port", default_target))
            if target != 22:
                annotations["spark-gateway/target-port"] = str(target)
            api.create_deployment(d["name"], replicas=int(d.get("replicas", 0)), target_port=target,
                                  annotations=annotations)
        if not args.no_kubelet:
            host_key = os.path.join(workdir, "ssh_host_ed25519_key")
            if not os.path.exists(host_key):
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key], check=True,
                               stdin=subprocess.DEVNULL)
            keys = os.path.join(workdir, "authorized_keys")
            sources = [args.authorized_keys] if args.authorized_keys else sorted(
                glob.glob(os.path.expanduser("~/.ssh/*.pub")))
            with open(keys, "w") as out:
                for src in sources:
                    with open(src) as f:
                        out.write(f.read().rstrip("\n") + "\n")
            kubelet = FakeKubelet(api, ip_allocator=LoopbackIpAllocator(avoid=(host,)),
                                  sshd_launcher=SshdLauncher(os.path.join(workdir, "pods"), host_key, keys),
                                  start_delay=args.start_delay)
            for d in args.deployment:
                if "scenario" in d or "start-delay" in d:
                    kubelet.set_scenario(d["name"], d.get("scenario", "normal"),
                                         float(d["start-delay"]) if "start-delay" in d else None)
            kubelet.start()
        token_file = api.write_token_file(os.path.join(workdir, "token"))
        kubeconfig = api.write_kubeconfig(os.path.join(workdir, "kubeconfig"))
        print("Kubernetes API double at %s (namespace %s)" % (api.url, args.namespace))
        print("  token file:  %s" % token_file)
        if args.tls:
            print("  CA file:     %s" % api.ca_file)
        print("  kubeconfig:  %s" % kubeconfig)
        print("  try:         curl %s-H \"Authorization: Bearer $(cat %s)\" %s/apis/apps/v1/namespaces/%s/deployments"
              % ("--cacert %s " % api.ca_file if args.tls else "", token_file, api.url, args.namespace))
        print("Ctrl-C to stop.")
        sys.stdout.flush()
        done = threading.Event()
        signal.signal(signal.SIGINT, lambda *a: done.set())
        signal.signal(signal.SIGTERM, lambda *a: done.set())
        while not done.wait(0.5):
            if kubelet is not None and kubelet.errors:
                for e in kubelet.errors:
                    print("kubelet: %s" % e, file=sys.stderr)
                del kubelet.errors[:]
    finally:
        if kubelet is not None:
            kubelet.stop()
        api.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
