// Must NOT compile: k8s/ sits below gateway/ (see the layers in the top CMakeLists.txt), so a
// k8s source cannot see the data plane's headers. tests/CMakeLists.txt checks the compiler says so.
#include "gateway/spark.hpp"
