"""Killing a container's processes the way a container runtime does (Linux /proc, standard library).

A real container is a cgroup (and a PID namespace): when the kubelet stops it, every process in it
gets SIGTERM, and whatever is left after the grace period gets SIGKILL; when its main process
exits on its own, the runtime kills the rest at once. A pod's sshd here is an ordinary child
process, and OpenSSH's per-connection processes call setsid() (as do the user sessions they
start), so signalling the listener alone leaves every open ssh session running, which a real
cluster never does.

So a "container" is found two ways, united:

  * the process tree under the main process, by /proc/PID/stat parent links. It must be
    collected while the main process still lives: once a parent exits its children are
    reparented (to init or a subreaper) and the links are gone;
  * an environment tag ("NAME=VALUE") that the launcher put into the main process's
    environment and into the sessions' (sshd's SetEnv), read from /proc/PID/environ. It finds
    the processes of a container whose main process already died, as a cgroup would.

kill_container() freezes what it finds first (SIGSTOP, rescanning until no new process
appears, so nothing forks its way out), then SIGTERM + SIGCONT to all, waits up to `grace`
seconds, SIGKILLs the survivors and waits (bounded) until they are gone. A PID is signalled only
while its start time is the one recorded, so a reused PID is never hit.
"""

import os
import signal
import time


class ProcInfo:
    __slots__ = ("pid", "state", "ppid", "session", "starttime")

    def __init__(self, pid, state, ppid, session, starttime):
        self.pid, self.state, self.ppid, self.session, self.starttime = pid, state, ppid, session, starttime

    @property
    def alive(self):
        return self.state not in ("Z", "X")

    def __repr__(self):
        return "ProcInfo(pid=%d, state=%s, ppid=%d, session=%d)" % (self.pid, self.state, self.ppid, self.session)


def stat(pid):
    """ProcInfo of `pid` from /proc/PID/stat, or None if it is gone (or unreadable)."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # "pid (comm) S ppid pgrp session ... starttime(22nd field) ...": comm may hold spaces and
    # parentheses, so split after the last ')'. rest[0] is field 3.
    rest = raw[raw.rfind(b")") + 1:].split()
    try:
        return ProcInfo(pid, rest[0].decode(), int(rest[1]), int(rest[3]), int(rest[19]))
    except (IndexError, ValueError):
        return None


def snapshot():
    """{pid: ProcInfo} of every process visible in /proc right now."""
    out = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for n in names:
        if n.isdigit():
            info = stat(int(n))
            if info is not None:
                out[info.pid] = info
    return out


def descendants(root, snap=None):
    """The pids of `root` and of every process whose parent chain leads to it (zombies included,
    so a caller can tell them from live ones)."""
    snap = snapshot() if snap is None else snap
    children = {}
    for info in snap.values():
        children.setdefault(info.ppid, []).append(info.pid)
    out, todo = set(), [root]
    while todo:  # bounded: every pid is visited once
        pid = todo.pop()
        if pid in out:
            continue
        out.add(pid)
        todo.extend(children.get(pid, ()))
    return out & set(snap)


def tagged(tag, snap=None):
    """The pids whose initial environment holds `tag` ("NAME=VALUE")."""
    snap = snapshot() if snap is None else snap
    want = tag.encode() if isinstance(tag, str) else tag
    me = os.getpid()
    out = set()
    for pid in snap:
        if pid == me:
            continue
        try:
            with open("/proc/%d/environ" % pid, "rb") as f:
                env = f.read()
        except OSError:
            continue
        if want in env.split(b"\0"):
            out.add(pid)
    return out


def container_processes(root=None, tag=None):
    """{pid: ProcInfo} of the live processes of a container: `root`'s tree and/or every process
    carrying the environment `tag`."""
    snap = snapshot()
    pids = set()
    if root is not None:
        pids |= descendants(root, snap)
    if tag:
        pids |= tagged(tag, snap)
    pids.discard(os.getpid())
    return {p: snap[p] for p in pids if p in snap and snap[p].alive}


def _same_and_alive(info):
    now = stat(info.pid)
    return now is not None and now.starttime == info.starttime and now.alive


def _signal(info, sig):
    if not _same_and_alive(info):
        return False
    try:
        os.kill(info.pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _wait_gone(procs, timeout, poll=None):
    deadline = time.monotonic() + timeout
    while True:
        if poll is not None:
            poll()
        left = [i for i in procs.values() if _same_and_alive(i)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.01)


def kill_container(root=None, tag=None, grace=2.0, poll=None, kill_timeout=5.0):
    """Stops every process of a container (see the module docstring): SIGTERM, up to `grace`
    seconds, then SIGKILL (grace 0: SIGKILL at once). `poll` is called while waiting (e.g.
    Popen.poll, so the caller's own child is reaped). Returns the ProcInfo of any process still
    alive `kill_timeout` seconds after the SIGKILL (normally none)."""
    found = {}
    for _ in range(50):  # freeze, then rescan for processes forked meanwhile; bounded
        new = {p: i for p, i in container_processes(root, tag).items() if p not in found}
        if not new:
            break
        for info in new.values():
            _signal(info, signal.SIGSTOP)
        found.update(new)
    if not found:
        return []
    if grace > 0:
        for info in found.values():
            _signal(info, signal.SIGTERM)
        for info in found.values():
            _signal(info, signal.SIGCONT)
        left = _wait_gone(found, grace, poll)
    else:
        left = list(found.values())
    for info in left:
        _signal(info, signal.SIGKILL)  # SIGKILL also ends a stopped process
    if not left:
        return []
    return _wait_gone({i.pid: i for i in left}, kill_timeout, poll)
