/* Shoal: the federation simulator.
 *
 * Runs the production round engine (server/round) against a population of
 * virtual devices on a virtual clock. Each device holds a partition of a
 * real dataset, is available only at certain hours of its local day, has
 * its own compute speed and bandwidth, and may drop out while training or
 * uploading. Only local training (shoal_trainer_run_local, the device
 * SDK's own training function) and aggregation cost real CPU time; waiting
 * costs nothing. Training runs on `threads` threads. Everything random is
 * drawn from `seed`, so the same configuration gives the same run, bit for
 * bit, whatever the thread count.
 *
 * Device model (per device, derived from seed and device id on demand, so a
 * device costs no memory beyond its data indices):
 *   - time zone: uniform over 24 hours;
 *   - availability: each local day the device is available (charging,
 *     idle, unmetered) in a window starting around avail_start_hour
 *     (+- 2 h of noise) and lasting avail_hours (+- 25%), plus, with
 *     probability avail_extra, one random extra hour; always available
 *     when avail_hours >= 24;
 *   - compute: speed_mflops drawn log-normally around compute_mflops
 *     (sigma speed_sigma); training takes
 *     3 * MACs * 2 * examples * epochs / speed;
 *   - network: bandwidth log-normal around bandwidth_kbps (same sigma);
 *     download and upload take model bytes / bandwidth;
 *   - dropout: with probability dropout the device fails at a uniform time
 *     during its session; it also drops if its availability window ends
 *     before it is done. */
#ifndef SHOAL_SIM_H
#define SHOAL_SIM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "shoal/model.h"
#include "shoal/partition.h"
#include "shoal/robust.h"
#include "shoal/round.h"
#include "shoal/train.h"

/* Secure aggregation of each round's updates, run in-process (one
 * SecAgg or SecAgg+ instance per group of reports, devices and server in
 * the simulator's thread) so its cost and its effect on accuracy can be
 * studied at scale. See docs/secure-aggregation.md. */
typedef enum shoal_sim_secagg_mode {
    SHOAL_SIM_SECAGG_OFF = 0,
    SHOAL_SIM_SECAGG_FULL, /* SecAgg: the complete graph, threshold n/2 + 1 */
    SHOAL_SIM_SECAGG_PLUS  /* SecAgg+: degree and threshold from shoal_secagg_plus_choose */
} shoal_sim_secagg_mode;

typedef struct shoal_sim_secagg_config {
    shoal_sim_secagg_mode mode;
    uint32_t group_size;  /* at most this many reports a group; 0: one group a round */
    double clip;          /* fixed-point range: each element clipped to [-clip, clip]; default 1 */
    unsigned bits;        /* the ring Z_(2^bits); default 32 */
    uint32_t max_weight;  /* a report's weight (its example count) is capped here; default 1000 */
    double dropout_rate;  /* SecAgg+: the dropout rate its parameters must tolerate; default 0.1 */
    double corrupt_rate;  /* SecAgg+: the colluding fraction it must resist; default 0.1 */
    double phase_dropout; /* each device drops at each phase with this probability; default 0 */
} shoal_sim_secagg_config;

/* Differential privacy (docs/privacy.md). Devices clip their update to L2
 * norm `clip` and every report weighs 1; then, by `mechanism`:
 *   - DP-FedAvg (shoal_round_dp_mean): the server adds noise of stddev
 *     noise x clip to each round's sum once and divides by the expected
 *     number of reports; the RDP accountant (shoal/privacy.h) composes
 *     q = clients-per-round / clients and `noise` per round;
 *   - DP-FTRL (shoal_round_dp_ftrl_mean): the server releases the noised
 *     prefix sum of the rounds' sums through a tree of nodes of stddev
 *     noise x clip, restarted every `ftrl_restart` rounds; each round's mean
 *     is the release's change over the expected reports, so with FedAvg
 *     the model is the initial one plus server-lr x the release. rho (zCDP,
 *     shoal_dp_tree_rho) adds over trees, each with k = the most reports one
 *     device made in it (the simulator counts them; no sampling assumption). */
typedef enum shoal_sim_dp_mechanism {
    SHOAL_SIM_DP_FEDAVG = 0,
    SHOAL_SIM_DP_FTRL
} shoal_sim_dp_mechanism;

typedef struct shoal_sim_dp_config {
    double clip;   /* S; 0: no DP */
    double noise;  /* z >= 0 (DP-FTRL: > 0); 0 clips without noise (epsilon infinite) */
    double delta;  /* default 1e-5 */
    double budget; /* stop before a round would take epsilon above it; 0: none */
    shoal_sim_dp_mechanism mechanism;
    uint32_t ftrl_restart; /* DP-FTRL: rounds per tree; 0: one tree for the run */
    /* Adaptive clipping (DP-FedAvg; shoal_round_dp_adaptive_clip): clip is
     * the first round's, and each round moves it toward this quantile of
     * the update norms at `adaptive_rate`, from the count of unclipped
     * updates with noise of stddev adaptive_count_noise. `noise` is then the
     * total multiplier the accountant composes; the update gets the part
     * the count leaves (shoal_round_dp_adaptive_update_noise). */
    double adaptive_quantile;    /* gamma in (0, 1); 0: a fixed clip */
    double adaptive_rate;        /* eta, default 0.2 */
    double adaptive_count_noise; /* sigma_b; 0: clients-per-round / 20 */
} shoal_sim_dp_config;

/* Who takes part in a round. */
typedef enum shoal_sim_sampling {
    /* The engine's: the first clients-per-round x over-selection devices to
     * check in while a round selects (availability and pace decide). */
    SHOAL_SIM_SAMPLING_CHECKIN = 0,
    /* Poisson: each round, every client independently with probability
     * q = clients-per-round / clients, the sampling the RDP analysis
     * assumes. Sampled devices check in at the round's start; the round
     * takes all of them and closes when each has reported or dropped (or at
     * the deadline). Sync only, without federated evaluation. */
    SHOAL_SIM_SAMPLING_POISSON,
    /* Shuffled epochs, the order DP-FTRL's analysis likes: each epoch a
     * seeded permutation of the clients, each round the next
     * clients-per-round of it (the clients left when fewer remain sit the
     * epoch out), so a device takes part once an epoch. Otherwise as
     * Poisson: the drawn devices check in at the round's start. */
    SHOAL_SIM_SAMPLING_SHUFFLE
} shoal_sim_sampling;

/* What attacking devices do to their update before they send it. */
typedef enum shoal_sim_attack {
    SHOAL_SIM_ATTACK_NONE = 0,
    SHOAL_SIM_ATTACK_SIGN_FLIP, /* send -update */
    SHOAL_SIM_ATTACK_SCALE,     /* send 100 x update */
    SHOAL_SIM_ATTACK_NOISE      /* send Gaussian noise, stddev 1 a coordinate */
} shoal_sim_attack;

/* Robust aggregation (shoal/robust.h) and attackers. Median and trimmed
 * mean need the round's individual updates, so none of them combines with
 * secure aggregation (or DP, whose noise is calibrated to a sum). */
typedef struct shoal_sim_robust_config {
    shoal_robust_kind aggregator; /* MEAN (default): the weighted mean */
    double trim_fraction;         /* trimmed mean: drop this fraction at each end; default 0.1 */
    double norm_bound;            /* norm_bounded: clip each update to this L2 norm */
    double attackers;             /* fraction of clients that attack, [0, 1) */
    shoal_sim_attack attack;
} shoal_sim_robust_config;

/* Phases whose dropouts a round's row counts (shoal_secagg_phase order). */
#define SHOAL_SIM_SECAGG_PHASES 5

typedef struct shoal_sim_config {
    /* Data and model. */
    const char *data_dir; /* NULL: SHOAL_FASHION_MNIST_DIR */
    shoal_model_arch model;
    shoal_partition_config partition;
    uint32_t clients; /* population size */

    /* Rounds: the engine's configuration (mode, goal_count = clients per
     * round or concurrency, over-selection, deadline, strategy, ...). */
    shoal_round_config round;
    uint32_t rounds; /* committed rounds (sync) or server steps (async) to run */

    /* Local training. */
    shoal_train_config train;

    /* Device model. */
    double avail_start_hour; /* default 22 (overnight charging) */
    double avail_hours;      /* default 8; >= 24 means always available */
    double avail_extra;      /* default 0.3 */
    double compute_mflops;   /* default 2000 */
    double bandwidth_kbps;   /* default 4000 */
    double speed_sigma;      /* log-normal sigma, default 0.5; 0 = homogeneous */
    double dropout;          /* per-session dropout probability, default 0.05 */

    /* Aggregation and privacy. With secure aggregation, DP or a robust
     * aggregator the simulator forms each round's mean itself at
     * SHOAL_ACTION_AGGREGATE (external_aggregation); otherwise the engine
     * folds. Attackers need neither. */
    shoal_sim_secagg_config secagg;
    shoal_sim_dp_config dp;
    shoal_sim_robust_config robust;
    shoal_sim_sampling sampling;

    /* Evaluation and running. */
    uint32_t test_every; /* evaluate on the central test set every N rounds (default 1) */
    uint32_t threads;    /* training threads (default 1) */
    uint64_t seed;
    double max_sim_hours; /* stop after this much simulated time (default 24*365) */
} shoal_sim_config;

/* Defaults for everything above (sync FedAvg, cnn, iid, 100 clients, 10 per round). */
SHOAL_API shoal_sim_config shoal_sim_defaults(void);

/* Adaptive clipping's count noise: dp.adaptive_count_noise, or
 * clients-per-round / 20 (the paper's choice) when that is 0. Pure. */
SHOAL_API double shoal_sim_dp_count_noise(const shoal_sim_config *cfg);

/* Checks the configuration as a whole (combinations included); ei names
 * the field. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_sim_config_check(const shoal_sim_config *cfg,
                                                           shoal_errinfo *ei);

/* One line of the per-round output. */
typedef struct shoal_sim_round {
    uint64_t round; /* committed rounds so far (or server steps) */
    double sim_time_s;
    uint32_t selected, reported, dropped, late;
    double train_loss;
    double test_accuracy; /* NaN when not evaluated this round */
    double test_loss;
    double fed_eval_accuracy;      /* latest federated evaluation, NaN if none yet */
    uint64_t bytes_down, bytes_up; /* cumulative */
    double wall_s;
    /* Wall seconds spent running device sessions (local training and
     * federated evaluation) since the previous row: the rest of the round's
     * wall time is the simulator's own work (selection, scheduling,
     * aggregation, central evaluation). */
    double train_s;
    int abandoned; /* 1 for an abandoned round (no model change) */
    /* Secure aggregation (zero when off): wall seconds spent encoding,
     * running the groups and decoding; devices that dropped at each phase
     * (indexed by shoal_secagg_phase); groups run and failed. */
    double secagg_s;
    uint32_t secagg_dropouts[SHOAL_SIM_SECAGG_PHASES];
    uint32_t secagg_groups, secagg_groups_failed;
    /* DP (NaN when off): epsilon spent after this round at dp.delta, and
     * the RDP order that gives it (improved conversion, default grid;
     * NaN for DP-FTRL, whose epsilon converts rho over a fine grid). */
    double epsilon, epsilon_order;
    double rho;     /* DP-FTRL: zCDP spent after this round; NaN otherwise */
    double dp_clip; /* DP: the clip this round's updates had; NaN without DP */
} shoal_sim_round;

/* Called after every committed or abandoned round, on the calling thread. */
typedef void (*shoal_sim_round_fn)(void *ctx, const shoal_sim_round *row);

typedef struct shoal_sim_result {
    uint64_t rounds_committed, rounds_abandoned;
    double sim_time_s, wall_s;
    double train_s; /* the rounds' train_s summed */
    double final_test_accuracy, final_test_loss;
    double fed_eval_accuracy; /* NaN if none */
    uint64_t bytes_down, bytes_up;
    uint64_t sessions, reports, dropouts, late;
    size_t peak_rss_bytes;
    int rounds_to_target; /* first round reaching target_accuracy, or -1 */
    double secagg_s;      /* secure aggregation's wall seconds over the run */
    uint64_t secagg_dropouts[SHOAL_SIM_SECAGG_PHASES];
    uint64_t secagg_groups_failed;
    double epsilon, epsilon_order; /* DP: spent over the run; NaN when off */
    double rho;                    /* DP-FTRL: zCDP spent over the run; NaN otherwise */
    uint32_t ftrl_participations;  /* DP-FTRL: the k of the last tree */
    double dp_clip;                /* DP: the clip the next round would use; NaN without */
    /* DP with dp.budget: the run stopped because the next round would
     * have taken epsilon to next_epsilon > budget. */
    int stopped_by_budget;
    double next_epsilon;
} shoal_sim_result;

/* Runs a simulation. `on_round` (may be NULL) sees every round; `target`
 * (0 for none) is the accuracy whose first crossing is reported in
 * result->rounds_to_target. Fails with SHOAL_EINVAL (ei filled) for a bad
 * configuration, SHOAL_EIO for missing data, SHOAL_ENOMEM, SHOAL_ENUMERIC
 * when training diverges. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_sim_run(const shoal_sim_config *cfg,
                                                  shoal_sim_round_fn on_round, void *ctx,
                                                  double target, shoal_sim_result *result,
                                                  shoal_errinfo *ei);

/* A ready dataset instead of loading one (tests, other datasets): train and
 * test must have the same shape; both are borrowed. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_sim_run_on(const shoal_sim_config *cfg,
                                                     const shoal_dataset *train,
                                                     const shoal_dataset *test,
                                                     shoal_sim_round_fn on_round, void *ctx,
                                                     double target, shoal_sim_result *result,
                                                     shoal_errinfo *ei);

#endif
