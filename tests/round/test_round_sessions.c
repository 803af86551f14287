/* What the engine tells a driver about the sessions it holds. */
#include <criterion/criterion.h>

#include "shoal/round.h"

static const float initial[2] = {0.0f, 1.0f};

Test(round_sessions, a_session_is_known_from_its_check_in_until_it_ends)
{
    shoal_round_config c = shoal_round_defaults(SHOAL_ROUND_SYNC, 1);
    c.over_selection = 1.0;
    c.pipelining = 0;
    shoal_round_engine *e = NULL;
    cr_assert_eq(shoal_round_engine_new(&c, initial, 2, NULL, 0, 0, 0, &e), SHOAL_OK);
    const shoal_session_id s = 0x9e3779b97f4a7c15u; /* ids are random: any value */
    cr_assert_not(shoal_round_session_known(e, s));
    shoal_checkin_result r;
    cr_assert_eq(shoal_round_checkin(e, 10, s, &r), SHOAL_OK);
    cr_assert(r.accepted);
    cr_assert(shoal_round_session_known(e, s));
    cr_assert_not(shoal_round_session_known(e, s + 1));
    /* A known id is refused, as the driver's check says it would be. */
    cr_assert_eq(shoal_round_checkin(e, 11, s, &r), SHOAL_ESTATE);
    shoal_round_lost(e, 12, s);
    cr_assert_not(shoal_round_session_known(e, s));
    cr_assert_not(shoal_round_session_known(NULL, s));
    shoal_round_engine_free(e);
}
