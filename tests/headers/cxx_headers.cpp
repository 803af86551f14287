// Every public header of libshoal-device (its own, the example store's,
// and the common and ml headers they pull in) compiled as C++ with every
// warning an error, and linked against the C libraries: a header without
// its extern "C" block declares C++ names, and the link fails on them.
#include "shoal/alloc.h"
#include "shoal/blas.h"
#include "shoal/client.h"
#include "shoal/client_trainer.h"
#include "shoal/dataset.h"
#include "shoal/err.h"
#include "shoal/layer.h"
#include "shoal/log.h"
#include "shoal/model.h"
#include "shoal/optim.h"
#include "shoal/plan.h"
#include "shoal/port.h"
#include "shoal/port_posix.h"
#include "shoal/port_test.h"
#include "shoal/rng.h"
#include "shoal/scheduler.h"
#include "shoal/store.h"
#include "shoal/train.h"
#include "shoal/version.h"

#include <cstdio>
#include <cstring>

// One function of each header, called through a pointer so that the
// linker must resolve every name.
static void *const functions[] = {
    reinterpret_cast<void *>(&shoal_alloc_set),
    reinterpret_cast<void *>(&shoal_gemm),
    reinterpret_cast<void *>(&shoal_client_new),
    reinterpret_cast<void *>(&shoal_example_iter_next),
    reinterpret_cast<void *>(&shoal_idx_parse),
    reinterpret_cast<void *>(&shoal_strerror),
    reinterpret_cast<void *>(&shoal_layer_make),
    reinterpret_cast<void *>(&shoal_log_set_level),
    reinterpret_cast<void *>(&shoal_model_arch_parse),
    reinterpret_cast<void *>(&shoal_optim_kind_parse),
    reinterpret_cast<void *>(&shoal_plan_train_config),
    reinterpret_cast<void *>(&shoal_port_check),
    reinterpret_cast<void *>(&shoal_posix_port_init),
    reinterpret_cast<void *>(&shoal_test_port_init),
    reinterpret_cast<void *>(&shoal_rng_seed),
    reinterpret_cast<void *>(&shoal_scheduler_new),
    reinterpret_cast<void *>(&shoal_store_open),
    reinterpret_cast<void *>(&shoal_train_config_check),
    reinterpret_cast<void *>(&shoal_version),
};

int main()
{
    for (void *f : functions)
        if (!f)
            return 1;
    // The macros and types are C++ too.
    shoal_session_result result = shoal_session_result();
    if (result.session_reason != SHOAL_SESSION_REASON_NONE ||
        std::strcmp(shoal_session_reason_name(SHOAL_SESSION_REASON_TIMEOUT), "TIMEOUT") != 0 ||
        std::strcmp(SHOAL_CLIENT_SDK_VERSION + std::strlen("shoal-device/"), shoal_version()) != 0)
        return 1;
    std::printf("%zu headers' functions linked as C\n", sizeof functions / sizeof functions[0]);
    return 0;
}
