package org.shoal.device;

/** One population's federated-learning client (shoal/client.h).
 *
 *  <p>{@link #runSession()} runs one session and blocks: check in, and when
 *  the server has a task, download the model, train on the examples the
 *  plan selects from the {@link ExampleStore} and upload the update (or
 *  evaluate). Call it from a background worker (Android's WorkManager),
 *  never from the main thread, then schedule the next run inside the
 *  window the result gives. Raw examples never leave the device.
 *
 *  <p>The device conditions come from the app's {@link DeviceConditions},
 *  asked before check-in and while the session trains and transfers: if
 *  the device stops qualifying (unplugged, on a metered network, in use,
 *  battery low), training stops and nothing is uploaded. Not thread-safe:
 *  one thread at a time. */
public final class ShoalClient implements AutoCloseable {
    static {
        System.loadLibrary("shoal_jni");
    }

    /** What the SDK asks of the platform. Each method is called on the
     *  thread inside {@link #runSession()}; keep them quick (read cached
     *  state, e.g. from sticky broadcasts). An exception counts as
     *  "unknown", which the policy treats as not qualifying. */
    public interface DeviceConditions {
        boolean isCharging();
        /** 0..100, or -1 if unknown. */
        int batteryPercent();
        /** Wi-Fi or Ethernet rather than cellular or a metered hotspot. */
        boolean isUnmetered();
        /** The user is not using the device (screen off, no input). */
        boolean isIdle();
    }

    /** The client's configuration. */
    public static final class Config {
        public String host;
        public int port;
        /** The DNS name the server's certificate carries (null: host). */
        public String serverName;
        /** The pinned CA certificate(s), PEM. The system trust store is
         *  never used. */
        public String caPem;
        public String population;
        public byte[] authToken;
        /** The example store's file (the app's ExampleStore). */
        public String storePath;
        /** Its key when it is encrypted (32 bytes), else null. */
        public byte[] storeKey;
        /** The device state database (retry windows, log, budgets, saved
         *  uploads); null keeps none. Use the app's files directory. */
        public String statePath;
        public boolean requireCharging = true;
        public boolean requireUnmetered = true;
        public boolean requireIdle = true;
        /** 0: no minimum. */
        public int minBatteryPercent = 0;
        /** Memory for a session's local work (bytes; 0: none). */
        public long budgetSessionBytes = 0;
    }

    private long handle;

    public ShoalClient(Config cfg, DeviceConditions conditions) throws ShoalException {
        int policy = (cfg.requireCharging ? 1 : 0) | (cfg.requireUnmetered ? 2 : 0)
                | (cfg.requireIdle ? 4 : 0);
        handle = nativeNew(cfg.host, cfg.port, cfg.serverName, cfg.caPem, cfg.population,
                           cfg.authToken, cfg.storePath, cfg.storeKey, cfg.statePath, policy,
                           cfg.minBatteryPercent, cfg.budgetSessionBytes, conditions);
    }

    /** Runs one session (blocking). Outcomes are results, not exceptions:
     *  a server that rejects, a device that does not qualify, a network
     *  error are all in the result. */
    public SessionResult runSession() throws ShoalException {
        if (handle == 0)
            throw new ShoalException("SHOAL_EINVAL: the client is closed");
        return nativeRun(handle);
    }

    @Override
    public void close() {
        if (handle != 0) {
            nativeFree(handle);
            handle = 0;
        }
    }

    private static native long nativeNew(String host, int port, String serverName, String caPem,
                                         String population, byte[] authToken, String storePath,
                                         byte[] storeKey, String statePath, int policy,
                                         int minBatteryPercent, long budgetSessionBytes,
                                         DeviceConditions conditions) throws ShoalException;
    private static native SessionResult nativeRun(long handle) throws ShoalException;
    private static native void nativeFree(long handle);
}
