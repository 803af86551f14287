import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;

import org.shoal.device.ExampleStore;
import org.shoal.device.SessionResult;
import org.shoal.device.ShoalClient;
import org.shoal.device.ShoalException;

/** The Java binding (device-sdk/android/) on the host JVM against a real
 *  shoal-server: examples logged through ExampleStore, a session that
 *  trains, device conditions read from Java while the session runs, and
 *  errors as ShoalExceptions naming the problem.
 *  Usage: JniSampleTest PORT CA_PEM_FILE SECRET_FILE WORK_DIR */
public final class JniSampleTest {
    private static int passed, failed;

    private static void check(boolean ok, String what) {
        if (ok) {
            passed++;
        } else {
            failed++;
            System.out.println("FAIL " + what);
        }
    }

    /** Conditions the test changes, counting how often the SDK asks. */
    static final class Conditions implements ShoalClient.DeviceConditions {
        volatile boolean charging = true, unmetered = true, idle = true, fail = false;
        volatile int battery = 80;
        volatile int asked;

        @Override public boolean isCharging() {
            asked++;
            if (fail)
                throw new IllegalStateException("battery service unavailable");
            return charging;
        }
        @Override public int batteryPercent() { asked++; return battery; }
        @Override public boolean isUnmetered() { asked++; return unmetered; }
        @Override public boolean isIdle() { asked++; return idle; }
    }

    private static String expectThrows(String what, ThrowingRunnable r) {
        try {
            r.run();
            check(false, what + ": no exception");
            return "";
        } catch (ShoalException e) {
            check(true, what);
            return e.getMessage();
        }
    }

    interface ThrowingRunnable {
        void run() throws ShoalException;
    }

    private static ShoalClient.Config config(int port, String ca, byte[] token, String dir) {
        ShoalClient.Config cfg = new ShoalClient.Config();
        cfg.host = "127.0.0.1";
        cfg.port = port;
        cfg.serverName = "localhost";
        cfg.caPem = ca;
        cfg.population = "p";
        cfg.authToken = token;
        cfg.storePath = dir + "/examples.db";
        return cfg;
    }

    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(args[0]);
        String ca = new String(Files.readAllBytes(Paths.get(args[1])), StandardCharsets.US_ASCII);
        byte[] token = new String(Files.readAllBytes(Paths.get(args[2])), StandardCharsets.US_ASCII)
                .trim().getBytes(StandardCharsets.US_ASCII);
        String dir = args[3];

        // The app logs examples: 200 of 4 features, label from the features.
        int n = 200, f = 4;
        float[] x = new float[n * f];
        int[] y = new int[n];
        long[] ts = new long[n];
        java.util.Random rnd = new java.util.Random(7);
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < f; j++)
                x[i * f + j] = (float) rnd.nextGaussian();
            y[i] = x[i * f] + x[i * f + 1] > x[i * f + 2] + x[i * f + 3] ? 1 : 0;
            ts[i] = 1767225600000L + i;
        }
        try (ExampleStore store = new ExampleStore(dir + "/examples.db", null)) {
            store.add("p", x, f, y, ts);
            check(store.count("p") == n, "count after add");
            String msg = expectThrows("features of the wrong length",
                    () -> store.add("p", new float[7], f, new int[2], new long[2]));
            check(msg.startsWith("SHOAL_EINVAL") && msg.contains("featureCount"),
                  "the wrong length is named: " + msg);
            msg = expectThrows("another feature count than the collection's",
                    () -> store.add("p", new float[3], 3, new int[1], new long[1]));
            check(msg.contains("p") && msg.contains("4"), "the collection's count is named: " + msg);
            check(store.count("nothing-here") == 0, "a collection never written holds nothing");
        }
        String msg = expectThrows("a key of the wrong length",
                () -> new ExampleStore(dir + "/other.db", new byte[5]));
        check(msg.contains("key") && msg.contains("5"), "the key length is named: " + msg);
        ExampleStore closed = new ExampleStore(dir + "/examples.db", null);
        closed.close();
        msg = expectThrows("a closed store", () -> closed.count("p"));
        check(msg.contains("closed"), "a closed store says so: " + msg);

        // Bad configurations.
        ShoalClient.Config bad = config(0, ca, token, dir);
        msg = expectThrows("port 0", () -> new ShoalClient(bad, new Conditions()));
        check(msg.contains("port"), "port named: " + msg);
        ShoalClient.Config noToken = config(port, ca, new byte[0], dir);
        msg = expectThrows("an empty token", () -> new ShoalClient(noToken, new Conditions()));
        check(msg.contains("authToken is empty"), "the empty token is named: " + msg);
        ShoalClient.Config emptyKey = config(port, ca, token, dir);
        emptyKey.storeKey = new byte[0];
        msg = expectThrows("an empty store key", () -> new ShoalClient(emptyKey, new Conditions()));
        check(msg.contains("storeKey is empty"), "the empty key is named: " + msg);
        msg = expectThrows("an empty store key on open",
                () -> new ExampleStore(dir + "/examples.db", new byte[0]));
        check(msg.contains("key is empty"), "the empty key is named on open: " + msg);
        // The caller's arrays are never written (the secrets are copied).
        byte[] mine = token.clone();
        new ShoalClient(config(port, ca, mine, dir), new Conditions()).close();
        check(java.util.Arrays.equals(mine, token), "the app's token array is left as it was");
        ShoalClient.Config noCa = config(port, null, token, dir);
        msg = expectThrows("no CA", () -> new ShoalClient(noCa, new Conditions()));
        check(msg.contains("caPem"), "caPem named: " + msg);

        // A session that trains, with the device state kept.
        Conditions cond = new Conditions();
        ShoalClient.Config cfg = config(port, ca, token, dir);
        cfg.statePath = dir + "/state.db";
        cfg.minBatteryPercent = 30;
        SessionResult r = null;
        try (ShoalClient client = new ShoalClient(cfg, cond)) {
            for (int tries = 0; tries < 50; tries++) {
                r = client.runSession();
                if (!r.outcome.equals("REJECTED"))
                    break;
                Thread.sleep(100);
            }
            check(r.outcome.equals("TRAINED"), "a session trains: " + r);
            check(r.exampleCount == n, "on every example: " + r.exampleCount);
            check(r.round == 1, "in round 1: " + r.round);
            // A window of a minute or more: the check below must not depend
            // on how fast a loaded machine gets from one call to the next.
            check(r.retryMinMs >= 60000 && r.retryMinMs <= r.retryMaxMs && r.retryMaxMs <= 90000,
                  "the server's window within its bounds: " + r.retryMinMs + ".." + r.retryMaxMs);
            check(r.workBytes > 0, "the work's memory is reported");
            check(cond.asked > 4, "the conditions were asked during the session: " + cond.asked);
            // The window it drew is persisted: an immediate session waits.
            r = client.runSession();
            check(r.outcome.equals("NOT_YET") && r.nextCheckinMs <= 90000,
                  "a session at once after it is held by the window: " + r);
        }

        // Conditions from Java decide eligibility.
        ShoalClient.Config plain = config(port, ca, token, dir);
        try (ShoalClient client = new ShoalClient(plain, cond)) {
            cond.charging = false;
            r = client.runSession();
            check(r.outcome.equals("INELIGIBLE") && r.message.contains("charging"),
                  "unplugged: " + r);
            cond.charging = true;
            cond.unmetered = false;
            r = client.runSession();
            check(r.outcome.equals("INELIGIBLE") && r.message.contains("metered"),
                  "on a metered network: " + r);
            cond.unmetered = true;
            cond.battery = 10;
        }
        ShoalClient.Config lowBattery = config(port, ca, token, dir);
        lowBattery.minBatteryPercent = 30;
        try (ShoalClient client = new ShoalClient(lowBattery, cond)) {
            r = client.runSession();
            check(r.outcome.equals("INELIGIBLE") && r.message.contains("battery"),
                  "battery at 10 with a minimum of 30: " + r);
            cond.battery = 80;
            cond.fail = true;
            r = client.runSession();
            check(r.outcome.equals("INELIGIBLE"), "a condition that throws counts as unknown: " + r);
            cond.fail = false;
        }

        // A wrong token is the server's refusal, named.
        ShoalClient.Config wrong = config(port, ca, "not-the-secret".getBytes(StandardCharsets.US_ASCII), dir);
        try (ShoalClient client = new ShoalClient(wrong, cond)) {
            r = client.runSession();
            check(!r.outcome.equals("TRAINED") && r.message.contains("AUTH_FAILED"),
                  "a wrong token: " + r);
        }
        ShoalClient gone = new ShoalClient(plain, cond);
        gone.close();
        msg = expectThrows("a closed client", gone::runSession);
        check(msg.contains("closed"), "a closed client says so: " + msg);

        System.out.println("jni_sample: " + passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }
}
