package org.shoal.device;

/** What one session did ({@code shoal_session_result} in shoal/client.h).
 *  Schedule the next session inside [retryMinMs, retryMaxMs] from now
 *  (WorkManager's flex window), or at nextCheckinUnixMs. */
public final class SessionResult {
    /** TRAINED, EVALUATED, REJECTED, INELIGIBLE, INTERRUPTED, ERROR,
     *  INSUFFICIENT_DATA, NOT_YET or OVER_BUDGET. */
    public final String outcome;
    /** Why, for a person (empty when there is nothing to say). */
    public final String message;
    /** The SDK's error code for ERROR (shoal_err), else 0. */
    public final int error;
    public final long retryMinMs;
    public final long retryMaxMs;
    public final long nextCheckinMs;
    public final long nextCheckinUnixMs;
    public final long round;
    public final long exampleCount;
    public final double loss;
    public final double accuracy;
    /** The upload was cut off and is kept to resume. */
    public final boolean uploadSaved;
    /** This session finished an upload an earlier one started. */
    public final boolean uploadResumed;
    /** Memory the local work was computed to need (bytes; 0 if none). */
    public final long workBytes;

    SessionResult(String outcome, String message, int error, long retryMinMs, long retryMaxMs,
                  long nextCheckinMs, long nextCheckinUnixMs, long round, long exampleCount,
                  double loss, double accuracy, boolean uploadSaved, boolean uploadResumed,
                  long workBytes) {
        this.outcome = outcome;
        this.message = message;
        this.error = error;
        this.retryMinMs = retryMinMs;
        this.retryMaxMs = retryMaxMs;
        this.nextCheckinMs = nextCheckinMs;
        this.nextCheckinUnixMs = nextCheckinUnixMs;
        this.round = round;
        this.exampleCount = exampleCount;
        this.loss = loss;
        this.accuracy = accuracy;
        this.uploadSaved = uploadSaved;
        this.uploadResumed = uploadResumed;
        this.workBytes = workBytes;
    }

    @Override
    public String toString() {
        return outcome + (message.isEmpty() ? "" : " (" + message + ")") + ", round " + round
                + ", " + exampleCount + " examples, next check-in in " + nextCheckinMs + " ms";
    }
}
