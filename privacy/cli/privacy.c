/* shoal-privacy: the RDP accountant from the command line.
 *
 *   shoal-privacy epsilon --sampling-rate Q --noise-multiplier Z --steps T
 *                         --delta D [--conversion improved|classic]
 *       prints "epsilon=E order=A conversion=C orders=default"
 *   shoal-privacy noise --sampling-rate Q --steps T --delta D --epsilon E
 *                       [--conversion improved|classic]
 *       prints "noise_multiplier=Z epsilon=E order=A conversion=C orders=default"
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shoal/privacy.h"
#include "shoal/version.h"

static const char usage[] =
    "usage: shoal-privacy epsilon --sampling-rate Q --noise-multiplier Z --steps T --delta D\n"
    "                             [--conversion improved|classic]\n"
    "       shoal-privacy noise --sampling-rate Q --steps T --delta D --epsilon E\n"
    "                           [--conversion improved|classic]\n"
    "\n"
    "The (epsilon, delta) of T rounds of the Poisson-subsampled Gaussian mechanism\n"
    "(DP-FedAvg: each device takes part with probability Q, the server adds noise of\n"
    "standard deviation Z x the clip norm to the sum), from a Renyi-DP accountant\n"
    "over the default grid of orders (1.25 ... 4.5, 5 ... 63, 128, 256, 512).\n"
    "'noise' finds the smallest Z that meets a target epsilon.\n"
    "\n"
    "  --sampling-rate Q     each device's chance of taking part in a round, in [0, 1]\n"
    "  --noise-multiplier Z  noise standard deviation over the clip norm, >= 0\n"
    "  --steps T             rounds, a whole number >= 1\n"
    "  --delta D             in (0, 1), e.g. 1e-5 (below 1 / number of devices)\n"
    "  --epsilon E           the target, > 0 ('noise' only)\n"
    "  --conversion C        improved (default; Balle et al. 2020) or classic\n"
    "  --help, --version\n"
    "\n"
    "The guarantee assumes Poisson sampling, which a real server cannot enforce\n"
    "(devices choose when to check in): see docs/privacy.md.\n";

static int bad(const char *flag, const char *value, const char *want)
{
    fprintf(stderr, "shoal-privacy: %s: '%s' is not %s\n%s", flag, value, want, usage);
    return 2;
}

static int parse_double(const char *v, double *out)
{
    char *end = NULL;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || *end != '\0' || errno != 0 || !isfinite(x))
        return -1;
    *out = x;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(usage, stdout);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
        printf("shoal-privacy %s\n", shoal_version());
        return 0;
    }
    if (argc < 2 || (strcmp(argv[1], "epsilon") != 0 && strcmp(argv[1], "noise") != 0)) {
        fprintf(stderr, "shoal-privacy: name a command: epsilon or noise\n%s", usage);
        return 2;
    }
    const int want_noise = strcmp(argv[1], "noise") == 0;
    double q = NAN, z = NAN, delta = NAN, target = NAN;
    unsigned long long steps = 0;
    shoal_dp_conversion conversion = SHOAL_DP_CONVERSION_IMPROVED;
    for (int i = 2; i < argc; i++) {
        const char *flag = argv[i];
        if (i + 1 >= argc) {
            fprintf(stderr, "shoal-privacy: %s needs a value\n%s", flag, usage);
            return 2;
        }
        const char *v = argv[++i];
        if (strcmp(flag, "--sampling-rate") == 0) {
            if (parse_double(v, &q) || q < 0 || q > 1)
                return bad(flag, v, "a rate in [0, 1]");
        } else if (strcmp(flag, "--noise-multiplier") == 0 && !want_noise) {
            if (parse_double(v, &z) || z < 0)
                return bad(flag, v, "a number >= 0");
        } else if (strcmp(flag, "--steps") == 0) {
            char *end = NULL;
            errno = 0;
            steps = strtoull(v, &end, 10);
            if (end == v || *end || errno || steps == 0 || v[0] == '-')
                return bad(flag, v, "a whole number of rounds >= 1");
        } else if (strcmp(flag, "--delta") == 0) {
            if (parse_double(v, &delta) || !(delta > 0 && delta < 1))
                return bad(flag, v, "a delta in (0, 1)");
        } else if (strcmp(flag, "--epsilon") == 0 && want_noise) {
            if (parse_double(v, &target) || !(target > 0))
                return bad(flag, v, "an epsilon > 0");
        } else if (strcmp(flag, "--conversion") == 0) {
            if (strcmp(v, "improved") == 0)
                conversion = SHOAL_DP_CONVERSION_IMPROVED;
            else if (strcmp(v, "classic") == 0)
                conversion = SHOAL_DP_CONVERSION_CLASSIC;
            else
                return bad(flag, v, "'improved' or 'classic'");
        } else {
            fprintf(stderr, "shoal-privacy %s: unknown option %s\n%s", argv[1], flag, usage);
            return 2;
        }
    }
    const char *missing = isnan(q)                      ? "--sampling-rate"
                          : steps == 0                  ? "--steps"
                          : isnan(delta)                ? "--delta"
                          : !want_noise && isnan(z)     ? "--noise-multiplier"
                          : want_noise && isnan(target) ? "--epsilon"
                                                        : NULL;
    if (missing) {
        fprintf(stderr, "shoal-privacy %s: %s is required\n%s", argv[1], missing, usage);
        return 2;
    }
    if (want_noise) {
        shoal_err err = shoal_rdp_noise_for_epsilon(q, steps, delta, target, conversion, &z);
        if (err == SHOAL_ELIMIT) {
            fprintf(stderr,
                    "shoal-privacy noise: no noise multiplier up to 10^6 reaches epsilon %g in "
                    "%llu rounds at sampling rate %g; allow a larger epsilon or fewer rounds\n",
                    target, steps, q);
            return 1;
        }
        if (err != SHOAL_OK) {
            fprintf(stderr, "shoal-privacy noise: %s (sampling rate must be > 0)\n",
                    shoal_strerror(err));
            return 1;
        }
    }
    shoal_rdp_accountant acc;
    double eps = 0, order = 0;
    if (shoal_rdp_accountant_init(&acc, NULL, 0) != SHOAL_OK ||
        shoal_rdp_accountant_compose(&acc, q, z, steps) != SHOAL_OK ||
        shoal_rdp_accountant_epsilon(&acc, delta, conversion, &eps, &order) != SHOAL_OK) {
        fprintf(stderr, "shoal-privacy: the accountant refused these arguments\n");
        return 1;
    }
    if (want_noise)
        printf("noise_multiplier=%.6f ", z);
    printf("epsilon=%.10g order=%g conversion=%s orders=default\n", eps, order,
           shoal_dp_conversion_name(conversion));
    return 0;
}
