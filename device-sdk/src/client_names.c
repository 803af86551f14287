/* The short names of the client's public enums, for logs and tools. */
#include "shoal/client.h"

const char *shoal_session_outcome_name(shoal_session_outcome outcome)
{
    switch (outcome) {
    case SHOAL_SESSION_TRAINED:
        return "TRAINED";
    case SHOAL_SESSION_EVALUATED:
        return "EVALUATED";
    case SHOAL_SESSION_REJECTED:
        return "REJECTED";
    case SHOAL_SESSION_INELIGIBLE:
        return "INELIGIBLE";
    case SHOAL_SESSION_INTERRUPTED:
        return "INTERRUPTED";
    case SHOAL_SESSION_INSUFFICIENT_DATA:
        return "INSUFFICIENT_DATA";
    case SHOAL_SESSION_ERROR:
        return "ERROR";
    case SHOAL_SESSION_NOT_YET:
        return "NOT_YET";
    case SHOAL_SESSION_OVER_BUDGET:
        return "OVER_BUDGET";
    }
    return "?";
}

const char *shoal_client_hold_name(shoal_client_hold hold)
{
    switch (hold) {
    case SHOAL_HOLD_NONE:
        return "NONE";
    case SHOAL_HOLD_RETRY_WINDOW:
        return "RETRY_WINDOW";
    case SHOAL_HOLD_CONTRIBUTION_PERIOD:
        return "CONTRIBUTION_PERIOD";
    case SHOAL_HOLD_BYTES_DOWN:
        return "BYTES_DOWN";
    case SHOAL_HOLD_BYTES_UP:
        return "BYTES_UP";
    }
    return "?";
}

const char *shoal_client_event_name(shoal_client_event_kind kind)
{
    switch (kind) {
    case SHOAL_EVENT_CHECKED_IN:
        return "CHECKED_IN";
    case SHOAL_EVENT_ACCEPTED:
        return "ACCEPTED";
    case SHOAL_EVENT_REJECTED:
        return "REJECTED";
    case SHOAL_EVENT_DOWNLOADED:
        return "DOWNLOADED";
    case SHOAL_EVENT_TRAINED:
        return "TRAINED";
    case SHOAL_EVENT_EVALUATED:
        return "EVALUATED";
    case SHOAL_EVENT_INTERRUPTED:
        return "INTERRUPTED";
    case SHOAL_EVENT_INSUFFICIENT_DATA:
        return "INSUFFICIENT_DATA";
    case SHOAL_EVENT_UPLOADED:
        return "UPLOADED";
    case SHOAL_EVENT_ACKED:
        return "ACKED";
    case SHOAL_EVENT_ERROR:
        return "ERROR";
    case SHOAL_EVENT_INELIGIBLE:
        return "INELIGIBLE";
    case SHOAL_EVENT_HELD:
        return "HELD";
    }
    return "?";
}

const char *shoal_session_reason_name(shoal_session_reason reason)
{
    switch (reason) {
    case SHOAL_SESSION_REASON_NONE:
        return "NONE";
    case SHOAL_SESSION_REASON_HELD:
        return "HELD";
    case SHOAL_SESSION_REASON_INELIGIBLE:
        return "INELIGIBLE";
    case SHOAL_SESSION_REASON_CONNECTION:
        return "CONNECTION";
    case SHOAL_SESSION_REASON_SERVER_UNTRUSTED:
        return "SERVER_UNTRUSTED";
    case SHOAL_SESSION_REASON_TIMEOUT:
        return "TIMEOUT";
    case SHOAL_SESSION_REASON_PROTOCOL:
        return "PROTOCOL";
    case SHOAL_SESSION_REASON_REJECTED:
        return "REJECTED";
    case SHOAL_SESSION_REASON_AUTH_FAILED:
        return "AUTH_FAILED";
    case SHOAL_SESSION_REASON_UNKNOWN_POPULATION:
        return "UNKNOWN_POPULATION";
    case SHOAL_SESSION_REASON_VERSION_UNSUPPORTED:
        return "VERSION_UNSUPPORTED";
    case SHOAL_SESSION_REASON_ABORTED:
        return "ABORTED";
    case SHOAL_SESSION_REASON_REPORT_REFUSED:
        return "REPORT_REFUSED";
    case SHOAL_SESSION_REASON_STOPPED_INELIGIBLE:
        return "STOPPED_INELIGIBLE";
    case SHOAL_SESSION_REASON_TIME_LIMIT:
        return "TIME_LIMIT";
    case SHOAL_SESSION_REASON_SESSION_BUDGET:
        return "SESSION_BUDGET";
    case SHOAL_SESSION_REASON_CANCELED:
        return "CANCELED";
    case SHOAL_SESSION_REASON_INSUFFICIENT_DATA:
        return "INSUFFICIENT_DATA";
    case SHOAL_SESSION_REASON_MEMORY_BUDGET:
        return "MEMORY_BUDGET";
    case SHOAL_SESSION_REASON_WORK_FAILED:
        return "WORK_FAILED";
    case SHOAL_SESSION_REASON_DEVICE:
        return "DEVICE";
    }
    return "?";
}
