package org.shoal.sample;

import android.content.Context;
import android.net.ConnectivityManager;
import android.os.BatteryManager;
import android.os.PowerManager;

import androidx.annotation.NonNull;
import androidx.work.Constraints;
import androidx.work.ExistingWorkPolicy;
import androidx.work.NetworkType;
import androidx.work.OneTimeWorkRequest;
import androidx.work.WorkManager;
import androidx.work.Worker;
import androidx.work.WorkerParameters;

import java.io.File;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.TimeUnit;

import org.shoal.device.SessionResult;
import org.shoal.device.ShoalClient;
import org.shoal.device.ShoalException;

/**
 * Sample: one Shoal session per WorkManager run, rescheduled inside the
 * retry window the server gave. WorkManager's constraints keep the worker
 * from starting unless the device is charging, idle and on an unmetered
 * network; the SDK checks the same conditions again (through
 * {@link AndroidConditions}) while it trains and uploads, and stops if
 * they change.
 *
 * Start it once, e.g. from Application.onCreate():
 *     ShoalTrainingWorker.schedule(context, 0);
 *
 * The app logs its examples with org.shoal.device.ExampleStore into
 * files/examples.db as they occur (see device-sdk/android/README.md).
 */
public final class ShoalTrainingWorker extends Worker {
    private static final String WORK_NAME = "shoal-training";

    public ShoalTrainingWorker(@NonNull Context context, @NonNull WorkerParameters params) {
        super(context, params);
    }

    /** Enqueues the next session after delayMs. APPEND_OR_REPLACE: called
     *  from inside doWork, it queues the next run behind the one running
     *  (REPLACE would cancel the running worker itself). */
    public static void schedule(Context context, long delayMs) {
        Constraints constraints = new Constraints.Builder()
                .setRequiresCharging(true)
                .setRequiresDeviceIdle(true)
                .setRequiredNetworkType(NetworkType.UNMETERED)
                .setRequiresBatteryNotLow(true)
                .build();
        OneTimeWorkRequest next = new OneTimeWorkRequest.Builder(ShoalTrainingWorker.class)
                .setConstraints(constraints)
                .setInitialDelay(delayMs, TimeUnit.MILLISECONDS)
                .build();
        WorkManager.getInstance(context)
                .enqueueUniqueWork(WORK_NAME, ExistingWorkPolicy.APPEND_OR_REPLACE, next);
    }

    /** The device conditions, from the platform's own services. */
    static final class AndroidConditions implements ShoalClient.DeviceConditions {
        private final BatteryManager battery;
        private final ConnectivityManager connectivity;
        private final PowerManager power;

        AndroidConditions(Context context) {
            battery = context.getSystemService(BatteryManager.class);
            connectivity = context.getSystemService(ConnectivityManager.class);
            power = context.getSystemService(PowerManager.class);
        }

        @Override public boolean isCharging() {
            return battery.isCharging();
        }

        @Override public int batteryPercent() {
            int level = battery.getIntProperty(BatteryManager.BATTERY_PROPERTY_CAPACITY);
            return level >= 0 && level <= 100 ? level : -1;
        }

        @Override public boolean isUnmetered() {
            return connectivity.getActiveNetwork() != null
                    && !connectivity.isActiveNetworkMetered();
        }

        @Override public boolean isIdle() {
            return !power.isInteractive();
        }
    }

    @NonNull
    @Override
    public Result doWork() {
        Context context = getApplicationContext();
        ShoalClient.Config cfg = new ShoalClient.Config();
        cfg.host = "fl.example.com";       // the shoal-server's name
        cfg.port = 443;
        cfg.population = "keyboard-next-word";
        cfg.storePath = new File(context.getFilesDir(), "examples.db").getPath();
        cfg.statePath = new File(context.getFilesDir(), "shoal-state.db").getPath();
        cfg.minBatteryPercent = 30;
        cfg.budgetSessionBytes = 64L << 20;
        long delayMs = TimeUnit.MINUTES.toMillis(30); // unless the server says otherwise
        try (InputStream ca = context.getAssets().open("shoal-ca.pem")) {
            cfg.caPem = new String(readAll(ca), StandardCharsets.US_ASCII);
            cfg.authToken = deviceToken(context);
            if (cfg.authToken.length > 0) {          // not provisioned yet: try later
                try (ShoalClient client = new ShoalClient(cfg, new AndroidConditions(context))) {
                    SessionResult r = client.runSession();
                    // The SDK drew this from the server's retry window.
                    delayMs = r.nextCheckinMs;
                }
            }
        } catch (ShoalException | java.io.IOException | RuntimeException e) {
            // Logged by the SDK (logcat tag "shoal"); keep the chain going.
        } finally {
            schedule(context, delayMs);
        }
        return Result.success();
    }

    private static byte[] readAll(InputStream in) throws java.io.IOException {
        java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream();
        byte[] buf = new byte[4096];
        for (int n; (n = in.read(buf)) > 0; )
            out.write(buf, 0, n);
        return out.toByteArray();
    }

    /** The device's token, provisioned by the app's own sign-in (never
     *  hard-coded in a real app). */
    private static byte[] deviceToken(Context context) {
        return context.getSharedPreferences("shoal", Context.MODE_PRIVATE)
                .getString("token", "")
                .getBytes(StandardCharsets.US_ASCII);
    }
}
