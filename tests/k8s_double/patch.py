"""PATCH bodies: JSON merge patch (RFC 7386) and JSON patch (RFC 6902).

kube-apiserver applies application/merge-patch+json with evanphx/json-patch MergePatch
(staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go, jsonPatcher.applyJSPatch): a null
value deletes the key, objects merge recursively, anything else (lists included) replaces. A body
that is not JSON at all is ErrBadJSONPatch -> 400 BadRequest "Invalid JSON Patch". JSON patch
decode errors are 400 with the decoder's message; a failing operation (e.g. `test`, or a path
that does not exist) is NewGenericServerResponse(422, ...) -> reason Invalid with the generic
message and empty details.
"""

import copy
import json

from . import status


def merge_patch(target, patch):
    """RFC 7386 MergePatch(target, patch), without modifying either argument."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def apply_merge_patch(doc, body):
    try:
        patch = json.loads(body.decode("utf-8") if isinstance(body, bytes) else body)
    except (ValueError, UnicodeDecodeError):
        raise status.bad_request("Invalid JSON Patch")
    if patch is None:
        raise status.bad_request("Invalid JSON Patch")
    result = merge_patch(doc, patch)
    if not isinstance(result, dict):
        raise status.invalid("", "", "", [status.invalid_field(
            "patch", json.dumps(result),
            "json: cannot unmarshal %s into Go value of type map[string]interface {}"
            % type(result).__name__.replace("list", "array").replace("str", "string"))])
    return result


def _unescape(token):
    return token.replace("~1", "/").replace("~0", "~")


def _split_pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError("JSON pointer must start with '/': %r" % path)
    return [_unescape(t) for t in path[1:].split("/")]


def _walk(doc, tokens):
    cur = doc
    for t in tokens:
        if isinstance(cur, dict):
            if t not in cur:
                raise KeyError(t)
            cur = cur[t]
        elif isinstance(cur, list):
            cur = cur[int(t)]
        else:
            raise KeyError(t)
    return cur


def _add(doc, tokens, value):
    if not tokens:
        return value
    parent = _walk(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            i = int(last)
            if i < 0 or i > len(parent):
                raise IndexError(last)
            parent.insert(i, value)
    else:
        raise KeyError(last)
    return doc


def _remove(doc, tokens):
    parent = _walk(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise KeyError(last)
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(int(last))
    raise KeyError(last)


def apply_json_patch(doc, body):
    try:
        ops = json.loads(body.decode("utf-8") if isinstance(body, bytes) else body)
    except (ValueError, UnicodeDecodeError) as e:
        raise status.bad_request("error decoding patch: %s" % e)
    if not isinstance(ops, list):
        raise status.bad_request("json: cannot unmarshal %s into Go value of type jsonpatch.Patch"
                                 % ("object" if isinstance(ops, dict) else type(ops).__name__))
    doc = copy.deepcopy(doc)
    try:
        for op in ops:
            kind = op.get("op")
            tokens = _split_pointer(op.get("path", ""))
            if kind == "add":
                doc = _add(doc, tokens, copy.deepcopy(op["value"]))
            elif kind == "remove":
                _remove(doc, tokens)
            elif kind == "replace":
                _walk(doc, tokens)  # must exist
                if not tokens:
                    doc = copy.deepcopy(op["value"])
                else:
                    parent = _walk(doc, tokens[:-1])
                    key = tokens[-1] if isinstance(parent, dict) else int(tokens[-1])
                    parent[key] = copy.deepcopy(op["value"])
            elif kind == "move":
                value = _remove(doc, _split_pointer(op["from"]))
                doc = _add(doc, tokens, value)
            elif kind == "copy":
                doc = _add(doc, tokens, copy.deepcopy(_walk(doc, _split_pointer(op["from"]))))
            elif kind == "test":
                if _walk(doc, tokens) != op.get("value"):
                    raise ValueError("testing value %s failed" % op.get("path"))
            else:
                raise ValueError("Unexpected kind: %s" % kind)
    except (KeyError, IndexError, ValueError, TypeError):
        raise status.ApiError(status.failure(
            422, "Invalid", "the server rejected our request due to an error in our request", {}))
    return doc
