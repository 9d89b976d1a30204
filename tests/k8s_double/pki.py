"""Certificates for the HTTPS mode, made with the `openssl` command-line tool: a throw-away CA,
a serving certificate for the listen address (plus the in-cluster names kubernetes.default.svc
etc., like kube-apiserver's), and client certificates whose CN is the user name and O the groups
(how kube-apiserver's x509 authenticator reads them:
https://kubernetes.io/docs/reference/access-authn-authz/authentication/#x509-client-certificates).
"""

import ipaddress
import os
import random
import subprocess

OPENSSL = "openssl"
_KEY_ARGS = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _run(args, cwd):
    r = subprocess.run([OPENSSL] + args, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (" ".join(args[:2]), r.stderr.strip()))


def make_ca(directory, cn="k8s-double-ca"):
    os.makedirs(directory, exist_ok=True)
    ca_crt, ca_key = os.path.join(directory, "ca.crt"), os.path.join(directory, "ca.key")
    _run(["req", "-x509"] + _KEY_ARGS + ["-keyout", ca_key, "-out", ca_crt, "-days", "3",
                                         "-subj", "/CN=%s" % cn,
                                         "-addext", "basicConstraints=critical,CA:TRUE",
                                         "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
                                         "-addext", "subjectKeyIdentifier=hash"], directory)
    return ca_crt, ca_key


def _sign(directory, stem, subject, ca_crt, ca_key, extensions):
    key, csr, crt = (os.path.join(directory, stem + ext) for ext in (".key", ".csr", ".crt"))
    ext_file = os.path.join(directory, stem + ".ext")
    with open(ext_file, "w") as f:
        f.write("\n".join(extensions) + "\n")
    _run(["req", "-new"] + _KEY_ARGS + ["-keyout", key, "-out", csr, "-subj", subject], directory)
    _run(["x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key,
          "-set_serial", str(random.SystemRandom().randint(1, 2 ** 62)),
          "-days", "3", "-out", crt, "-extfile", ext_file], directory)
    os.chmod(key, 0o600)
    return crt, key


def make_server_cert(directory, ca_crt, ca_key, host):
    sans = ["DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local", "IP:127.0.0.1"]
    try:
        ipaddress.ip_address(host)
        if host != "127.0.0.1":
            sans.append("IP:%s" % host)
    except ValueError:
        sans.append("DNS:%s" % host)
    return _sign(directory, "apiserver", "/CN=kube-apiserver", ca_crt, ca_key, [
        "basicConstraints=CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "extendedKeyUsage=serverAuth",
        "subjectKeyIdentifier=hash",
        "authorityKeyIdentifier=keyid,issuer",
        "subjectAltName=" + ",".join(sans)])


def make_client_cert(directory, ca_crt, ca_key, user, groups=()):
    stem = "client-" + "".join(c if c.isalnum() else "_" for c in user)
    subject = "/CN=%s" % user.replace("/", "\\/") + "".join("/O=%s" % g for g in groups)
    return _sign(directory, stem, subject, ca_crt, ca_key, [
        "basicConstraints=CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "extendedKeyUsage=clientAuth",
        "authorityKeyIdentifier=keyid,issuer"])
