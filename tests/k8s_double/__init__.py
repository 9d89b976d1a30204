"""A Kubernetes API double for spark-gateway's end-to-end tests (standard library only).

    from k8s_double import KubeApiDouble, FakeKubelet, SshdLauncher, LoopbackIpAllocator, ApiClient

    api = KubeApiDouble(host="127.5.6.7", namespace="spark").start()       # or tls=True
    api.create_deployment("brave-dolphin", replicas=0, target_port=2222,
                          annotations={"spark-gateway/port": "4022"})
    kubelet = FakeKubelet(api, sshd_launcher=SshdLauncher(workdir, host_key, authorized_keys)).start()
    ...
    kubelet.stop(); api.stop()

See docs/kubernetes-api-double.md for what is emulated (with sources) and the known differences.
"""

from .apiserver import Identity, KubeApiDouble, RequestRecord, bookmark_object  # noqa: F401
from .client import ApiClient, Response, WatchStream  # noqa: F401
from . import proctree  # noqa: F401
from .faults import DelayRule, FailRule, Faults  # noqa: F401
from .kubelet import (POD_TAG_VAR, SCENARIOS, FakeKubelet, LoopbackIpAllocator, SshdLauncher,  # noqa: F401
                      SshdProcess)
from .status import ApiError  # noqa: F401
from .store import RESOURCES, Store  # noqa: F401
