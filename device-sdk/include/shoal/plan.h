/* Shoal: reading a plan's training settings.
 *
 * A plan (protocol/shoal.proto, Plan.optimizer) names the client optimizer
 * and its hyperparameters, epochs and batch size; local training
 * (ml/include/shoal/train.h) takes them as a shoal_train_config. Every
 * device — the SDK's client, shoal-fleet's virtual devices — converts with
 * this one function, so they all train exactly as the plan says. */
#ifndef SHOAL_PLAN_H
#define SHOAL_PLAN_H

#include "shoal/envelope.h"
#include "shoal/train.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fills *tc (all fields; should_stop left NULL) from plan->optimizer:
 * the optimizer's defaults (shoal_optim_defaults) for its kind and learning
 * rate, then every hyperparameter the plan sets. ClientOptimizer.kind
 * counts from SGD = 1, shoal_optim_kind from 0. SHOAL_EINVAL for NULL
 * arguments, SHOAL_EPROTO when the plan has no optimizer or an unknown
 * kind (a validated TRAIN plan always has one). Pure and thread-safe. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_plan_train_config(const Shoal__Plan *plan,
                                                            shoal_train_config *tc);

#ifdef __cplusplus
}
#endif

#endif
