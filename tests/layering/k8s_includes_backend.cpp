// Must compile: the backend seam is below k8s/, which implements one of its backends.
#include "gateway/backend/backend.hpp"
#include "k8s/kubernetes_backend.hpp"
