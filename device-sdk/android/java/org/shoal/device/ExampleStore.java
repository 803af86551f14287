package org.shoal.device;

/** The app's example store (shoal/store.h): training examples the app
 *  logs as they occur. They never leave the device; sessions select from
 *  them. One instance per thread; close it when done. */
public final class ExampleStore implements AutoCloseable {
    static {
        System.loadLibrary("shoal_jni");
    }

    private long handle;

    /** Opens (creating) the store at {@code path}; {@code key} (32 bytes,
     *  or null) encrypts examples at rest and must be the same at every
     *  open. */
    public ExampleStore(String path, byte[] key) throws ShoalException {
        handle = nativeOpen(path, key);
    }

    /** Adds examples in one transaction: {@code labels.length} examples of
     *  {@code featureCount} floats each, row-major in {@code features}. */
    public void add(String collection, float[] features, int featureCount, int[] labels,
                    long[] timestampsMs) throws ShoalException {
        nativeAdd(open(), collection, features, featureCount, labels, timestampsMs);
    }

    /** The number of examples in {@code collection}. */
    public long count(String collection) throws ShoalException {
        return nativeCount(open(), collection);
    }

    @Override
    public void close() {
        if (handle != 0) {
            nativeClose(handle);
            handle = 0;
        }
    }

    private long open() throws ShoalException {
        if (handle == 0)
            throw new ShoalException("SHOAL_EINVAL: the example store is closed");
        return handle;
    }

    private static native long nativeOpen(String path, byte[] key) throws ShoalException;
    private static native void nativeAdd(long handle, String collection, float[] features,
                                         int featureCount, int[] labels, long[] timestampsMs)
            throws ShoalException;
    private static native long nativeCount(long handle, String collection) throws ShoalException;
    private static native void nativeClose(long handle);
}
