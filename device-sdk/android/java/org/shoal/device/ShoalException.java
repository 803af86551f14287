package org.shoal.device;

/** A failure of the Shoal SDK: the message starts with the error's name
 *  (for example {@code SHOAL_EINVAL}) and says what was wrong and, where it
 *  can, what to do. */
public final class ShoalException extends Exception {
    private static final long serialVersionUID = 1L;

    public ShoalException(String message) {
        super(message);
    }
}
