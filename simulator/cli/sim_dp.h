/* shoal-sim's report of differential privacy: the setting at the start,
 * each round's figures, the run's last line and summary.json's "dp"
 * object, each saying which accounting produced its epsilon and whether
 * the run met what that accounting assumes. Single-threaded (the CLI's
 * main thread); everything printed goes to stdout. */
#ifndef SHOAL_SIM_DP_H
#define SHOAL_SIM_DP_H

#include <jansson.h>

#include "shoal/sim.h"

/* "fedavg" or "ftrl" into *out: 0, or -1 for anything else. */
int shoal_sim_cli_dp_mechanism_parse(const char *v, shoal_sim_dp_mechanism *out);

/* The lines naming the mechanism and its accounting, and the warning when
 * the run's sampling is not what DP-FedAvg's epsilon assumes. */
void shoal_sim_cli_dp_setting(const shoal_sim_config *c);

/* A round line's DP figures (" epsilon E (order A)", or for DP-FTRL
 * " rho R epsilon E"), no newline. */
void shoal_sim_cli_dp_row(const shoal_sim_round *r);

/* The run's "stopped_by_budget:" line when it stopped, and the
 * "epsilon=..." line. */
void shoal_sim_cli_dp_result(const shoal_sim_config *c, const shoal_sim_result *r);

/* summary.json's "dp" object (new reference), NULL without memory. */
json_t *shoal_sim_cli_dp_json(const shoal_sim_config *c, const shoal_sim_result *r);

#endif
