"""metav1.Status objects, built the way kube-apiserver builds them.

Every failure the double answers is one of these, with the reason strings, HTTP codes, messages
and `details` of k8s.io/apimachinery pkg/api/errors/errors.go (NewNotFound, NewAlreadyExists,
NewConflict, NewInvalid, NewForbidden, NewUnauthorized, NewResourceExpired, NewBadRequest,
NewMethodNotSupported, NewInternalError, NewTimeoutError, NewGenericServerResponse).
Key order follows the Go struct (TypeMeta, ListMeta, status, message, reason, details, code), as
encoding/json writes it; `details` is left out when the Go code leaves it nil.
"""

# storage.OptimisticLockErrorMsg (k8s.io/apiserver pkg/storage/errors.go), used by the generic
# registry's Update (pkg/registry/generic/registry/store.go) when resourceVersions differ.
OPTIMISTIC_LOCK_MSG = ("the object has been modified; please apply your changes to the latest "
                       "version and try again")

# What PATCH accepts on built-in types (k8s.io/apiserver pkg/endpoints/installer.go) and what
# POST/PUT bodies may be (the negotiated serializers); both appear in 415 messages.
PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
               "application/strategic-merge-patch+json", "application/apply-patch+yaml")
BODY_TYPES = ("application/json", "application/yaml", "application/vnd.kubernetes.protobuf")


class ApiError(Exception):
    """An error answered as a Status object with status["code"] as the HTTP code, or, with
    `raw`, as that body (of `content_type`) instead; `headers` go out with it."""

    def __init__(self, status, headers=None, raw=None, content_type="application/json"):
        super().__init__(status.get("message", ""))
        self.status = status
        self.code = status["code"]
        self.headers = headers or {}
        self.raw = raw
        self.content_type = content_type


def _details(name="", group="", kind="", uid="", causes=None, retry_after=0):
    """metav1.StatusDetails with omitempty fields dropped, in struct order."""
    d = {}
    if name:
        d["name"] = name
    if group:
        d["group"] = group
    if kind:
        d["kind"] = kind
    if uid:
        d["uid"] = uid
    if causes:
        d["causes"] = causes
    if retry_after:
        d["retryAfterSeconds"] = retry_after
    return d


def failure(code, reason, message, details=None, metadata=None):
    s = {"kind": "Status", "apiVersion": "v1", "metadata": metadata or {}, "status": "Failure",
         "message": message}
    if reason:
        s["reason"] = reason
    if details is not None:
        s["details"] = details
    s["code"] = code
    return s


def success(name="", group="", kind="", uid=""):
    """What a DELETE answers for types whose store does not return the deleted object
    (finalizeDelete in pkg/registry/generic/registry/store.go): details.kind is the resource."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": _details(name, group, kind, uid)}


def qualified(group, resource):
    """schema.GroupResource.String(): "deployments.apps", or just "pods" for the core group."""
    return "%s.%s" % (resource, group) if group else resource


def go_quote(s):
    """Go's %q for the plain strings used in names and messages."""
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20:
            out.append("\\x%02x" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def not_found(group, resource, name):
    return ApiError(failure(404, "NotFound", "%s %s not found" % (qualified(group, resource), go_quote(name)),
                            _details(name, group, resource)))


def namespace_not_found(namespace):
    return not_found("", "namespaces", namespace)


def already_exists(group, resource, name):
    return ApiError(failure(409, "AlreadyExists",
                            "%s %s already exists" % (qualified(group, resource), go_quote(name)),
                            _details(name, group, resource)))


def conflict(group, resource, name, why=OPTIMISTIC_LOCK_MSG):
    return ApiError(failure(409, "Conflict", "Operation cannot be fulfilled on %s %s: %s"
                            % (qualified(group, resource), go_quote(name), why),
                            _details(name, group, resource)))


def forbidden(group, resource, name, why):
    if not group and not resource:
        message = "forbidden: %s" % why
    elif not name:
        message = "%s is forbidden: %s" % (qualified(group, resource), why)
    else:
        message = "%s %s is forbidden: %s" % (qualified(group, resource), go_quote(name), why)
    return ApiError(failure(403, "Forbidden", message, _details(name, group, resource)))


def rbac_forbidden_message(user, verb, resource, subresource, group, namespace, path=None):
    """forbiddenMessage (k8s.io/apiserver pkg/endpoints/handlers/responsewriters/errors.go)."""
    if path is not None:
        return "User %s cannot %s path %s" % (go_quote(user), verb, go_quote(path))
    res = resource + ("/" + subresource if subresource else "")
    if namespace:
        return "User %s cannot %s resource %s in API group %s in the namespace %s" % (
            go_quote(user), verb, go_quote(res), go_quote(group), go_quote(namespace))
    return "User %s cannot %s resource %s in API group %s at the cluster scope" % (
        go_quote(user), verb, go_quote(res), go_quote(group))


def unauthorized():
    # k8s.io/apiserver pkg/endpoints/filters/authentication.go: NewUnauthorized("Unauthorized").
    return ApiError(failure(401, "Unauthorized", "Unauthorized"))


def bad_request(message):
    return ApiError(failure(400, "BadRequest", message))


def expired(message):
    return ApiError(failure(410, "Expired", message))


def too_old_resource_version(requested, floor):
    # watch_cache.go getAllEventsSinceLocked: NewResourceExpired("too old resource version: %d (%d)").
    return expired("too old resource version: %d (%d)" % (requested, floor))


def too_large_resource_version(requested, current):
    # storage.NewTooLargeResourceVersionError (k8s.io/apiserver pkg/storage/errors.go): a 504 Timeout
    # with a ResourceVersionTooLarge cause and retryAfterSeconds 1.
    st = failure(504, "Timeout", "Timeout: Too large resource version: %d, current: %d" % (requested, current),
                 _details(causes=[{"reason": "ResourceVersionTooLarge",
                                   "message": "Too large resource version"}], retry_after=1))
    return ApiError(st)


def method_not_allowed():
    # The go-restful 405 goes through NewGenericServerResponse: fixed message, empty details.
    return ApiError(failure(405, "MethodNotAllowed",
                            "the server does not allow this method on the requested resource", {}))


def path_not_found():
    return ApiError(failure(404, "NotFound", "the server could not find the requested resource", {}))


def unsupported_media_type(types):
    # negotiation.NewUnsupportedMediaTypeError (k8s.io/apiserver pkg/endpoints/handlers/negotiation/errors.go)
    return ApiError(failure(415, "UnsupportedMediaType",
                            "the body of the request was in an unknown format - accepted media types "
                            "include: " + ", ".join(types)))


def internal_error(message):
    return ApiError(failure(500, "InternalError", "Internal error occurred: %s" % message,
                            _details(causes=[{"message": message}])))


def service_unavailable(message):
    return ApiError(failure(503, "ServiceUnavailable", message))


def too_many_requests(message, retry_after=0):
    """NewTooManyRequests: a Status 429 TooManyRequests with details.retryAfterSeconds."""
    return ApiError(failure(429, "TooManyRequests", message, _details(retry_after=retry_after)))


APF_REJECTED = "Too many requests, please try again later."


def flow_control_rejection(retry_after=1):
    """What max-in-flight and API Priority and Fairness answer when they turn a request away
    (tooManyRequests in k8s.io/apiserver pkg/server/filters/maxinflight.go, used by
    priority-and-fairness.go too): `Retry-After` and net/http's http.Error, i.e. a text/plain
    body, NOT a Status object."""
    return ApiError(failure(429, "TooManyRequests", APF_REJECTED),
                    headers={"Retry-After": str(retry_after), "X-Content-Type-Options": "nosniff"},
                    raw=(APF_REJECTED + "\n").encode(), content_type="text/plain; charset=utf-8")


def retry_after_of(status):
    """ErrorNegotiated (k8s.io/apiserver pkg/endpoints/handlers/responsewriters/writers.go) sends
    a Retry-After header for every error Status whose details carry retryAfterSeconds > 0."""
    if not isinstance(status, dict):
        return 0
    return (status.get("details") or {}).get("retryAfterSeconds", 0)


# --------------------------------------------------------------------------------------------
# field.Error (k8s.io/apimachinery pkg/util/validation/field/errors.go) and NewInvalid


def go_label_selector(sel):
    """%#v of a *metav1.LabelSelector, as validation messages print it."""
    ml = (sel or {}).get("matchLabels") or {}
    labels = "map[string]string{%s}" % ", ".join("%s:%s" % (go_quote(k), go_quote(str(v)))
                                                 for k, v in sorted(ml.items())) if ml else "map[string]string(nil)"
    return "v1.LabelSelector{MatchLabels:%s, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}" % labels


class GoRepr(str):
    """A value already formatted the way Go prints it."""


def go_value(v):
    """Roughly how field.Error prints a value (%#v for strings, %v otherwise)."""
    if isinstance(v, GoRepr):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return go_quote(v)
    if v is None:
        return "null"
    if isinstance(v, dict):
        return "map[string]string{%s}" % ", ".join(
            "%s:%s" % (go_quote(str(k)), go_quote(str(x))) for k, x in sorted(v.items()))
    return str(v)


class FieldError:
    def __init__(self, kind, field, value=None, detail=""):
        self.kind, self.field, self.value, self.detail = kind, field, value, detail

    CAUSE = {"invalid": "FieldValueInvalid", "required": "FieldValueRequired",
             "forbidden": "FieldValueForbidden", "unsupported": "FieldValueNotSupported",
             "duplicate": "FieldValueDuplicate"}

    def body(self):
        if self.kind == "invalid":
            s = "Invalid value: %s" % go_value(self.value)
        elif self.kind == "required":
            s = "Required value"
        elif self.kind == "forbidden":
            s = "Forbidden"
        elif self.kind == "unsupported":
            s = "Unsupported value: %s" % go_value(self.value)
        else:
            s = "Duplicate value: %s" % go_value(self.value)
        if self.detail:
            s += ": " + self.detail
        return s

    def __str__(self):
        return "%s: %s" % (self.field, self.body())


def invalid_field(field, value, detail):
    return FieldError("invalid", field, value, detail)


def required_field(field, detail=""):
    return FieldError("required", field, None, detail)


def invalid(group, kind, name, errors):
    """NewInvalid: 422, message "<Kind>.<group> "<name>" is invalid: <aggregate>"."""
    causes = [{"reason": FieldError.CAUSE[e.kind], "message": e.body(), "field": e.field} for e in errors]
    qkind = "%s.%s" % (kind, group) if group else kind
    if not errors:
        message = "%s %s is invalid" % (qkind, go_quote(name))
    elif len(errors) == 1:
        message = "%s %s is invalid: %s" % (qkind, go_quote(name), errors[0])
    else:
        message = "%s %s is invalid: [%s]" % (qkind, go_quote(name), ", ".join(str(e) for e in errors))
    return ApiError(failure(422, "Invalid", message, _details(name, group, kind, causes=causes)))
